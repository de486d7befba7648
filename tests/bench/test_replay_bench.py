"""bench/replay.py runs end to end on a tiny setting (the numbers are not checked, only equality and the ratio line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_replay_bench_runs_both_paths() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "replay.py"), "--sessions", "4"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "250"})
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout[-2000:]
    assert "byte-identical: True" in out.stdout and "replay / live per event:" in out.stdout
