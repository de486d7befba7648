"""Prometheus metrics of a worker (``--metrics-port`` exposes them over HTTP)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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
WATERMARK = Gauge("settle_watermark_ms", "Event-time watermark", ["partition"])
CHECKPOINT_SECONDS = Histogram("settle_checkpoint_seconds", "Time to write or restore one partition checkpoint",
                               ["operation"], buckets=(1e-3, 5e-3, 2e-2, 0.1, 0.5, 2, 10))
CHECKPOINT_BYTES = Gauge("settle_checkpoint_bytes", "Size of the partition's latest checkpoint", ["partition"])
CHECKPOINT_RESTORES = Counter("settle_checkpoint_restores_total",
                              "Partition state loads, by result: restored, none, behind, unavailable, corrupt",
                              ["result"])
HELD_RECORDS = Gauge("settle_held_records", "Records handled but not yet committed (bounded by the checkpoints)",
                     ["partition"])
# open regions, late events, drops and dead letters: counters and a gauge below (observe_settler_totals)


DECISIONS = Counter("settle_scored_total", "Scorer decisions, by decision and model version", ["decision", "model_version"])
SAMPLES = Counter("settle_samples_total", "Student samples drawn by the scorer")
SCORE_SECONDS = Histogram("settle_score_batch_seconds", "Time to score one batch", buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120))


def observe_settlers(settlers: Mapping[int, "PartitionSettler"]) -> None:
    for partition, s in settlers.items():
        p = str(partition)
        if s.tracker.watermark_ms is not None:
            WATERMARK.labels(p).set(s.tracker.watermark_ms)
        for example in s.kept_rates:
            observe_kept_rate(example.production_model, example.production_kept_rate)
        s.kept_rates.clear()
    observe_settler_totals(settlers)


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
ZED_REPORTED_KEPT_RATE = Histogram("settle_zed_reported_kept_rate",
                                   "Kept rate Zed's client computed, every settled report (consent or not: numbers only)",
                                   ["model_version"], buckets=_RATE_BUCKETS)


def observe_kept_rate(model_version: str | None, rate: "KeptRate | None") -> None:
    """One settled example's production kept rate, labelled by the production model version."""
    if rate is None:
        return
    label = model_version or "unknown"
    KEPT_RATE.labels(label).observe(rate.kept_rate)
    RECALL_RATE.labels(label).observe(rate.recall_rate)
    KEPT_BYTES.labels(label).inc(rate.kept + rate.correctly_deleted)
    EDIT_BYTES.labels(label).inc(rate.candidate_new + rate.candidate_deleted)


# -- operations (issue 12): Prometheus naming, counters end in _total, one family per meaning --

EVENTS = Counter("settle_events_total", "Events accepted by the settle agent's tracker (ticks included)", ["partition"])
REGIONS_OPEN = Gauge("settle_regions_open", "Regions waiting to settle", ["partition"])
SETTLED = Counter("settle_settled_total", "Regions settled", ["partition"])
DROPPED_TOTAL = Counter("settle_dropped_total", "Regions dropped, by reason", ["reason"])
DEAD_LETTERS_TOTAL = Counter("settle_dead_letters_total", "Records dead-lettered by the settle agent, by reason", ["reason"])
LATE_TOTAL = Counter("settle_late_events_total", "Buffer events older than what the partition clock decided", ["partition"])
SKEWED_TOTAL = Counter("settle_skewed_events_total", "Buffer events whose client clock ran ahead", ["partition"])
CONSUMER_LAG = Gauge("settle_consumer_lag_records", "End offset minus the group's committed offset",
                     ["group", "topic", "partition"])
BAND_DECISIONS = Counter("settle_decisions_total", "Scorer decisions by band, policy mode and model version",
                         ["decision", "mode", "model_version"])
SCORED_EXAMPLES = Counter("settle_scored_examples_total", "Examples scored (rate() = examples per second)")
SAMPLES_SAVED = Counter("settle_adaptive_samples_saved_total", "Samples adaptive k did not draw (k minus samples used)")
MODEL_INFO = Gauge("settle_model_info", "The model version this scorer uses (value 1)", ["model", "version"])
MODEL_RELOADS = Counter("settle_model_reloads_total", "Hot reloads to a newly published version", ["model"])
VERDICTS = Counter("settle_model_verdicts_total", "Trainer verdicts read from `models`", ["model", "verdict"])
LAST_VERDICT = Gauge("settle_model_last_verdict_info",
                     "The latest verdict read from `models` (value: its time, Unix seconds), with its reason",
                     ["model", "version", "parent_version", "verdict", "reason"])
TRAIN_RUNS = Counter("settle_train_runs_total", "Trainer runs, by outcome (published, rejected, skipped, failed)",
                     ["status"])
TRAIN_RESUMED = Counter("settle_train_resumed_runs_total", "Trainer runs that resumed a killed run's fine-tuning")
TRAIN_LAST_START = Gauge("settle_train_last_run_start_timestamp_seconds", "Start of the latest trainer run")
TRAIN_LAST_DURATION = Gauge("settle_train_last_run_duration_seconds", "Duration of the latest trainer run")
TRAIN_EXAMPLES = Gauge("settle_train_last_run_examples", "Examples of the latest trainer run, by set", ["set"])
GATE = Counter("settle_publish_gate_total", "Publish-gate results of trainer runs", ["model", "verdict"])

#: (partition, counter name, reason) -> (settler identity, value last exported)
_exported: dict[tuple[int, str, str], tuple[int, int]] = {}


def _advance(counter: Counter, key: tuple[int, str, str], owner: int, value: int, *labels: str) -> None:
    """Export a settler's since-start count as a counter: add what it gained since the last look.

    A rebuilt settler (new owner, or a rewind) starts from 0 again; what it counts then is new work.
    """
    last_owner, last = _exported.get(key, (owner, 0))
    delta = value - last if last_owner == owner else value
    if delta > 0:
        counter.labels(*labels).inc(delta)
    _exported[key] = (owner, value)


def observe_settler_totals(settlers: Mapping[int, "PartitionSettler"]) -> None:
    for partition, s in settlers.items():
        p, owner, stats = str(partition), id(s), s.tracker.stats
        REGIONS_OPEN.labels(p).set(s.tracker.open_regions())
        _advance(EVENTS, (partition, "events", ""), owner, stats.events, p)
        _advance(SETTLED, (partition, "settled", ""), owner, stats.settled, p)
        _advance(LATE_TOTAL, (partition, "late", ""), owner, stats.late_events, p)
        _advance(SKEWED_TOTAL, (partition, "skewed", ""), owner, stats.skewed_events, p)
        for reason, n in s.dropped.items():
            _advance(DROPPED_TOTAL, (partition, "dropped", reason), owner, n, reason)
        for reason, n in s.dead_letters.items():
            _advance(DEAD_LETTERS_TOTAL, (partition, "dead", reason), owner, n, reason)


def observe_scored(scored: Any) -> None:
    """One scored example: its band decision, and the samples adaptive k saved."""
    decision = scored.decision
    BAND_DECISIONS.labels(decision.decision, decision.policy.mode, scored.model_version).inc()
    SCORED_EXAMPLES.inc()
    if decision.samples_used:
        SAMPLES_SAVED.inc(max(0, decision.policy.k - decision.samples_used))


def observe_model_in_use(model: str, version: str) -> None:
    MODEL_INFO.clear()
    MODEL_INFO.labels(model, version).set(1)
    MODEL_RELOADS.labels(model).inc()


def observe_verdict(message: Any) -> None:
    """A `models` record: counted by verdict; the latest one kept with its reason."""
    VERDICTS.labels(message.name, message.status).inc()
    LAST_VERDICT.clear()
    LAST_VERDICT.labels(message.name, message.version, message.parent_version, message.status,
                        message.reason[:300]).set(message.created_at_ms / 1000)


def observe_train_run(report: Any, started: float, ended: float) -> None:
    """One trainer run (a RunReport) in the trainer process's metrics."""
    TRAIN_RUNS.labels(report.status).inc()
    if report.resumed_from_step:
        TRAIN_RESUMED.inc()
    TRAIN_LAST_START.set(started)
    TRAIN_LAST_DURATION.set(ended - started)
    for name, n in (("new", report.new_examples), ("train", report.train_examples), ("eval", report.eval_examples)):
        TRAIN_EXAMPLES.labels(name).set(n)
    if report.message is not None:
        GATE.labels(report.message.name, report.message.status).inc()
