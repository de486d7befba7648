"""Prometheus metrics of a worker (``--metrics-port`` exposes them over HTTP)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
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
