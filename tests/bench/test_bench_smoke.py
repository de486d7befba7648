"""The benches run end to end on a tiny setting (not a timing test: the numbers are not checked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]
WIDE = {**os.environ, "COLUMNS": "250"}  # rich wraps table cells to the terminal width


def test_sampler_bench_runs_both_peers(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "sampler.py"), "--shape", "tiny", "--k", "2", "--prompt-tokens", "16",
         "--new-tokens", "4", "--examples", "2", "--peer-examples", "1", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=WIDE,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ONNX speedup" in out.stdout and "HF generate" in out.stdout
    assert "examples run" in out.stdout


def test_scoring_bench_runs_all_sources(bootstrapped_student: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scoring.py"), "--student", str(bootstrapped_student), "--sessions", "4",
         "--limit", "4", "--k", "2", "--batch", "2", "--max-new-tokens", "8"],
        capture_output=True, text=True, timeout=600, env=WIDE,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for source in ("drops finished rows", "keeps them", "HF generate"):
        assert source in out.stdout, out.stdout
