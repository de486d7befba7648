"""bench/settle_throughput.py runs end to end on a tiny setting (the rates are not checked, only that every peer ran,
its offsets were committed and the settled ids matched the pure tracker's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.broker
@pytest.mark.slow
def test_throughput_bench_runs_every_peer() -> None:
    pytest.importorskip("quixstreams")
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "settle_throughput.py"), "--sessions", "3", "--repeats", "1",
         "--timeout", "240"],
        check=False, capture_output=True, text=True, timeout=900, env={**os.environ, "COLUMNS": "250"},
    )
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    for line in ("pipeline / pure:", "pipeline / quix:", "pipeline / faust-table:",
                 "settled ids equal the pure tracker's: True"):
        assert line in out.stdout, out.stdout
