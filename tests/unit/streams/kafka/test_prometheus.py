"""The metric helpers: counters from since-start counts, band decisions and savings, verdicts with reasons."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import REGISTRY

from settle.schemas.models import ModelPublished
from settle.schemas.scored import BandPolicy, Decision
from settle.streams.kafka import prometheus as metrics


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_since_start_counts_become_counters_across_a_rebuilt_settler() -> None:
    before = _value("settle_dropped_total", reason="unit_test_reason")
    key = (99, "dropped", "unit_test_reason")
    metrics._advance(metrics.DROPPED_TOTAL, key, 1, 3, "unit_test_reason")
    metrics._advance(metrics.DROPPED_TOTAL, key, 1, 5, "unit_test_reason")  # +2
    metrics._advance(metrics.DROPPED_TOTAL, key, 1, 5, "unit_test_reason")  # unchanged
    metrics._advance(metrics.DROPPED_TOTAL, key, 2, 1, "unit_test_reason")  # rebuilt settler: counts anew
    assert _value("settle_dropped_total", reason="unit_test_reason") - before == 6


def test_band_decisions_and_adaptive_savings() -> None:
    policy = BandPolicy(mode="solve_rate", k=16)
    saved, kept = _value("settle_adaptive_samples_saved_total"), _value(
        "settle_decisions_total", decision="keep", mode="solve_rate", model_version="vU")
    for used, decision in ((8, "keep"), (16, "too_easy"), (0, "unchanged")):
        scored = SimpleNamespace(model_version="vU", decision=Decision(decision=decision, reason="", samples_used=used,
                                                                        policy=policy))
        metrics.observe_scored(scored)
    assert _value("settle_adaptive_samples_saved_total") - saved == 8  # 16-8, 16-16; unsampled counts nothing
    assert _value("settle_decisions_total", decision="keep", mode="solve_rate", model_version="vU") - kept == 1


def test_the_latest_verdict_keeps_its_reason_and_replaces_the_previous_one() -> None:
    def verdict(version: str, status: str, reason: str) -> ModelPublished:
        return ModelPublished(name="unit", version=version, status=status, location="/m", created_at_ms=2000,
                              parent_version="v0001", reason=reason)

    metrics.observe_verdict(verdict("v0002", "rejected", "delta-chrF 2.95 below 4.20"))
    metrics.observe_verdict(verdict("v0003", "published", "delta-chrF 5.00 vs 4.20"))
    assert _value("settle_model_verdicts_total", model="unit", verdict="rejected") >= 1
    assert _value("settle_model_last_verdict_info", model="unit", version="v0003", parent_version="v0001",
                  verdict="published", reason="delta-chrF 5.00 vs 4.20") == 2.0
    assert REGISTRY.get_sample_value("settle_model_last_verdict_info", {
        "model": "unit", "version": "v0002", "parent_version": "v0001", "verdict": "rejected",
        "reason": "delta-chrF 2.95 below 4.20"}) is None
    metrics.observe_model_in_use("unit", "v0003")
    assert _value("settle_model_info", model="unit", version="v0003") == 1
