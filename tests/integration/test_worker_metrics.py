"""A running settle worker's /metrics, scraped during a run, against the offline reference's counts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from settle.schemas.codecs import encode
from settle.streams.kafka.io import produce_lines
from settle.streams.kafka.topics import ensure_topics_sync
from settle.streams.local.broker import free_port
from settle.streams.local.processes import WorkerProcess
from settle.streams.settings import Settings
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate

from .test_retraining_job import _sample, _scrape

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _total(text: str, name: str, **labels: str) -> float:
    """Sum of a family's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
    return total


def test_worker_metrics_during_a_run_match_the_reference(settings: Settings, tmp_path: Path) -> None:
    ensure_topics_sync(settings)
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=6, seed=12))]
    lines[5:5] = [b"{not json", b"[1, 2]"]  # malformed and not_an_object: dead letters
    reference = settle_records(enumerate(lines), settings.tracker)
    ticks = sum(1 for line in lines if b'"kind":"tick"' in line)
    assert reference.examples and ticks

    port = free_port()
    worker = WorkerProcess(settings, tmp_path / "worker.log", extra_args=("--metrics-port", str(port))).start()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                before = _scrape(port)
                break
            except OSError:
                assert worker.alive and time.monotonic() < deadline, worker.log_tail()
                time.sleep(0.3)
        assert _total(before, "settle_settled_total") == 0
        sent = asyncio.run(produce_lines(settings, lines))

        expected_settled = reference.tracker.stats.settled
        while _total(text := _scrape(port), "settle_settled_total") < expected_settled:
            assert worker.alive and time.monotonic() < deadline, (worker.log_tail(), text)
            time.sleep(0.5)
        time.sleep(6)  # one more batch and a lag probe (every 5 s)
        text = _scrape(port)
    finally:
        worker.stop()

    assert _total(text, "settle_settled_total") == expected_settled
    # every partition sees every tick; buffer events are counted once
    assert _total(text, "settle_events_total") == reference.tracker.stats.events + ticks * (settings.partitions - 1)
    assert _sample(text, "settle_dead_letters_total", reason="malformed") == 1
    assert _sample(text, "settle_dead_letters_total", reason="not_an_object") == 1
    assert _total(text, "settle_regions_open") == reference.tracker.open_regions()
    for reason, n in reference.tracker.stats.dropped_by_reason.items():
        assert _sample(text, "settle_dropped_total", reason=reason) == n, reason
    assert _total(text, "settle_outputs_total", topic="settled") >= len(reference.examples)
    # consumer lag of the worker's group, one gauge per partition of `edits`, within what was sent
    group, topic = f"{settings.group_prefix}-settle", settings.topic("edits")
    lags = [_sample(text, "settle_consumer_lag_records", group=group, topic=topic, partition=str(p))
            for p in range(settings.partitions)]
    assert all(lag is not None and 0 <= lag <= sent for lag in lags), lags
    # Prometheus conventions: counters end in _total, every family has HELP and TYPE
    for family in ("settle_events_total", "settle_settled_total", "settle_dead_letters_total"):
        assert f"# TYPE {family} counter" in text and f"# HELP {family} " in text
