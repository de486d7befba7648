"""The publish gate: not worse than the current model, within GateTolerance, on the same held-out set.
"""

from __future__ import annotations

import msgspec
import pytest

from settle.trainer.evaluate.gate import DEFAULT_TOLERANCE, GateTolerance, compare
from settle.trainer.evaluate.summary import EvalSummary, summarize

BASE = EvalSummary(
    count=200,
    parsed=198,
    parse_rate=0.99,
    delta_chrf=40.0,
    reversal_ratio=0.05,
    exact_match_rate=0.30,
    exact_match_normalized_rate=0.32,
    reversal_rows=120,
)


def _with(**kw: float) -> EvalSummary:
    return msgspec.structs.replace(BASE, **kw)


def test_compare_passes_when_not_worse() -> None:
    ok, reason = compare(BASE, BASE)
    assert ok and reason.startswith("not worse") and "delta-chrF 40.00 vs 40.00" in reason
    # better everywhere
    assert compare(_with(delta_chrf=45.0, reversal_ratio=0.01, exact_match_rate=0.4), BASE)[0]
    # slightly worse but within every tolerance (defaults: 1.0 point, 1%, 0.01, 2%)
    assert compare(
        _with(delta_chrf=39.0, parse_rate=0.98, reversal_ratio=0.06, exact_match_rate=0.28),
        BASE,
    )[0]


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"delta_chrf": 38.9}, "delta-chrF"),
        ({"parse_rate": 0.97}, "parse rate"),
        ({"reversal_ratio": 0.07}, "reversal ratio"),
        ({"exact_match_rate": 0.27}, "exact match"),
    ],
)
def test_compare_fails_each_check(change: dict[str, float], name: str) -> None:
    ok, reason = compare(_with(**change), BASE)
    assert not ok
    assert reason.startswith("worse than current") and name in reason
    assert reason.count(";") == 0  # only the failing check is named


def test_compare_reports_all_failures_and_custom_tolerance() -> None:
    ok, reason = compare(_with(delta_chrf=30.0, reversal_ratio=0.5), BASE)
    assert not ok and "delta-chrF" in reason and "reversal ratio" in reason
    # a looser tolerance lets the same drop through
    assert compare(_with(delta_chrf=30.0), BASE, tolerance=GateTolerance(delta_chrf=10.0))[0]
    # zero tolerance: any drop fails, equality passes
    strict = GateTolerance(delta_chrf=0, parse_rate=0, reversal_ratio=0, exact_match_rate=0)
    assert compare(BASE, BASE, tolerance=strict)[0]
    assert not compare(_with(delta_chrf=39.99), BASE, tolerance=strict)[0]
    assert DEFAULT_TOLERANCE == GateTolerance()


def test_compare_refuses_incomparable_sets() -> None:
    ok, reason = compare(_with(count=199), BASE)
    assert not ok and "different held-out sets" in reason
    empty = summarize([])
    ok, reason = compare(empty, empty)
    assert not ok and "empty" in reason
