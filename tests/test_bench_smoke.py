"""The benches run end to end on a tiny setting (not a timing test: the numbers are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]


def test_sampler_bench_runs_both_peers(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "sampler.py"), "--shape", "tiny", "--k", "2", "--prompt-tokens", "16",
         "--new-tokens", "4", "--examples", "2", "--peer-examples", "1", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ONNX speedup" in out.stdout and "HF generate" in out.stdout
    assert "examples run" in out.stdout
