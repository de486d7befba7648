"""`settle ingest` refuses to start without client tokens: one error line, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys


def test_ingest_without_tokens_is_one_error_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLE_INGEST_")}
    done = subprocess.run([sys.executable, "-m", "settle.streams.cli", "ingest", "--port", "1"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: ingest: no client tokens: set SETTLE_INGEST_TOKENS=client:token or --tokens-file"]


def test_ingest_with_a_malformed_token_entry_is_one_error_line() -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SETTLE_INGEST_")},
           "SETTLE_INGEST_TOKENS": "zed-without-token"}
    done = subprocess.run([sys.executable, "-m", "settle.streams.cli", "ingest"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: ingest: token entry 1: expected CLIENT:TOKEN"  # the entry is not echoed
