"""Prometheus metrics of a worker (``--metrics-port`` exposes them over HTTP)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from settle.schemas.examples import KeptRate
    from settle.streams.settling.partition import PartitionSettler

OUTPUTS = Counter("settle_outputs_total", "Records produced, by topic", ["topic"])
EVENT_SECONDS = Histogram(
    "settle_event_seconds",
    "Time to settle one input record (decode + track)",
    buckets=(1e-6, 5e-6, 2e-5, 1e-4, 5e-4, 2e-3, 1e-2, 0.1),
)
OPEN_REGIONS = Gauge("settle_open_regions", "Regions waiting to settle", ["partition"])
WATERMARK = Gauge("settle_watermark_ms", "Event-time watermark", ["partition"])
LATE = Gauge("settle_late_events", "Events older than the watermark (since start)", ["partition"])
DROPPED = Gauge("settle_dropped_regions", "Regions dropped, by reason (since start)", ["partition", "reason"])
DEAD = Gauge("settle_dead_letters", "Records dead-lettered, by reason (since start)", ["partition", "reason"])


DECISIONS = Counter("settle_scored_total", "Scorer decisions, by decision and model version", ["decision", "model_version"])
SAMPLES = Counter("settle_samples_total", "Student samples drawn by the scorer")
SCORE_SECONDS = Histogram("settle_score_batch_seconds", "Time to score one batch", buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120))


def observe_settlers(settlers: Mapping[int, "PartitionSettler"]) -> None:
    for partition, s in settlers.items():
        p = str(partition)
        OPEN_REGIONS.labels(p).set(s.tracker.open_regions())
        if s.tracker.watermark_ms is not None:
            WATERMARK.labels(p).set(s.tracker.watermark_ms)
        LATE.labels(p).set(s.tracker.stats.late_events)
        for reason, n in s.dropped.items():
            DROPPED.labels(p, reason).set(n)
        for reason, n in s.dead_letters.items():
            DEAD.labels(p, reason).set(n)
        for example in s.kept_rates:
            observe_kept_rate(example.production_model, example.production_kept_rate)
        s.kept_rates.clear()


# -- ingest endpoint and Zed's kept rate (settle ingest; also observed where `settled` is produced) --

INGEST_REQUESTS = Counter("settle_ingest_requests_total", "HTTP posts answered, by route and status", ["route", "status"])
INGEST_RECORDS = Counter("settle_ingest_values_total", "Posted values, accepted or by rejection reason", ["route", "outcome"])
ZED_REPORTS = Counter("settle_zed_reports_total", "Zed settled reports, by outcome", ["outcome"])
JOIN_WAITING = Gauge("settle_ingest_join_waiting", "Prediction requests waiting for their Zed settled report")
JOIN_COUNTS = Gauge("settle_ingest_join", "Request/report join counts since start", ["what"])
_RATE_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
KEPT_RATE = Histogram("settle_production_kept_rate", "Zed kept rate of the production prediction per settled example",
                      ["model_version"], buckets=_RATE_BUCKETS)
RECALL_RATE = Histogram("settle_production_recall_rate", "Zed recall rate of the production prediction per settled example",
                        ["model_version"], buckets=_RATE_BUCKETS)
KEPT_BYTES = Counter("settle_production_kept_bytes_total",
                     "Kept + correctly deleted bytes of production predictions (over edit bytes: the pooled kept rate)",
                     ["model_version"])
EDIT_BYTES = Counter("settle_production_edit_bytes_total", "Bytes production predictions changed (new + deleted)",
                     ["model_version"])
ZED_KEPT_RATE_CHECKS = Counter("settle_zed_kept_rate_checks_total",
                               "Zed's client-computed kept rate vs settle's on the joined request", ["result"])


def observe_kept_rate(model_version: str | None, rate: "KeptRate | None") -> None:
    """One settled example's production kept rate, labelled by the production model version."""
    if rate is None:
        return
    label = model_version or "unknown"
    KEPT_RATE.labels(label).observe(rate.kept_rate)
    RECALL_RATE.labels(label).observe(rate.recall_rate)
    KEPT_BYTES.labels(label).inc(rate.kept + rate.correctly_deleted)
    EDIT_BYTES.labels(label).inc(rate.candidate_new + rate.candidate_deleted)
