"""bench/ingest.py runs end to end on a tiny setting (not a timing test: the numbers are not checked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.broker
def test_ingest_bench_runs_both_paths_and_prints_the_ratio() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ingest.py"), "--sessions", "3", "--repeats", "1", "--batch", "100",
         "--zstd"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "250"},
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "plain aiokafka producer" in out.stdout and "settle ingest" in out.stdout
    assert "ratio endpoint / plain producer:" in out.stdout and "posted events are on the topic" in out.stdout
