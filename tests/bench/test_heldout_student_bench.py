"""bench/heldout_student.py runs end to end at a tiny size and reports its diagnosis figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]


def test_heldout_bench_reports_share_band_and_baselines(bootstrapped_student: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "heldout_student.py"), "--student", str(bootstrapped_student),
         "--sessions", "3", "--k", "2", "--max-new-tokens", "8"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["changed"] > 0
    by_size = result["best_of_k_by_edit_size"]
    assert 0 < sum(b["regions"] for b in by_size.values()) <= result["changed"]
    assert 0 <= result["greedy_beats_not_editing"] <= 1
    no_model = result["no_model"]
    # a constant insertion at the cursor is no oracle, but it is closer than nothing on some region
    assert 0 < no_model["constant 'self.' beats not editing"] <= 1
    assert 0 <= no_model["first-line oracle solves"] <= 1
