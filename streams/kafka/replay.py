"""`settle replay`: bounded backfills with a plain aiokafka loop (no Faust).

Two jobs, both into topics under a new prefix, both under a consumer group of
their own (partitions are assigned, never subscribed, so no live group is
joined, rebalanced or committed for):

* :func:`replay_edits` re-settles a span of `edits` with :class:`SpanSettler`
  (the boundary rule is written down in ``settle.streams.settling.span``);
* :func:`replay_settled` re-scores a span of `settled` with a chosen student
  through :func:`score_batch`, the offline scorer's own function.

Batches (``getmany``) and msgspec decoding are where the speed is (NOTES.md).
The embedded broker answers ListOffsets-by-time with offset 0 and its end
offsets can be short, so times are found by binary search over record
timestamps (assumed non-decreasing within a partition, as when the ingest
endpoint or the broker stamps them), the end of an open span is "no record for
``idle_s``", and end offsets serve only the progress display.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from settle.streams.kafka.io import topic_partitions
from settle.streams.records import Consumed, dead_letter

try:  # TLS/SASL settings, where this deployment has them
    from settle.streams.kafka.security import client_kwargs
except ImportError:  # pragma: no cover
    def client_kwargs(settings: Settings) -> dict[str, Any]:  # type: ignore[misc]
        return {"bootstrap_servers": settings.bootstrap}
from settle.streams.kafka.topics import ensure_topics
from settle.streams.settings import DEAD_LETTER, EDITS, KEPT, SCORED, SETTLED, Settings
from settle.streams.settling.span import SpanSettler, default_warmup_ms

#: progress callback: (records read, records expected (approximate), records left (approximate))
Progress = Callable[[int, int, int], None]


@dataclass(frozen=True)
class Span:
    """Which records: per-partition offsets and/or record-timestamp bounds (ms); None = open."""

    from_offsets: dict[int, int] | None = None
    to_offsets: dict[int, int] | None = None
    from_ms: int | None = None
    to_ms: int | None = None
    #: warm-up before the span (edits only); None = ``default_warmup_ms`` of the tracker config
    warmup_ms: int | None = None

    def __post_init__(self) -> None:
        """ValueError for a span that ends before it starts (per partition, or in time)."""
        if self.from_ms is not None and self.to_ms is not None and self.to_ms < self.from_ms:
            raise ValueError(f"the span ends ({self.to_ms}) before it starts ({self.from_ms})")
        for p, end in (self.to_offsets or {}).items():
            start = (self.from_offsets or {}).get(p)
            if start is not None and end < start:
                raise ValueError(f"partition {p}: the span ends at offset {end} before it starts at {start}")
        if self.warmup_ms is not None and self.warmup_ms < 0:
            raise ValueError(f"warm-up must be >= 0 ms, not {self.warmup_ms}")


@dataclass
class PartitionPlan:
    partition: int
    warm: int
    start: int
    end: int | None
    #: end offset reported by the broker when the replay started (display only)
    high: int


@dataclass
class ReplayReport:
    plans: list[PartitionPlan]
    records: int = 0
    in_span: int = 0
    emitted: dict[str, int] = field(default_factory=dict)
    suppressed: int = 0
    undecided: int = 0
    duplicates: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


async def published_location(settings: Settings, name: str, version: str) -> str:
    """Directory of a version published on `models` (``latest``: the newest); LookupError if none."""
    from settle.schemas.codecs import InvalidRecord, decode_model
    from settle.schemas.models import ModelPublished
    from settle.streams.kafka.io import read_topic
    from settle.streams.settings import MODELS

    found: ModelPublished | None = None
    for r in sorted(await read_topic(settings, MODELS, idle_s=1.0), key=lambda r: r.offset):
        try:
            m = decode_model(r.value)
        except InvalidRecord:
            continue
        if m.status == "published" and m.name == name and version in ("latest", m.version):
            found = m
    if found is None:
        raise LookupError(f"no published {name} {version} on {settings.topic(MODELS)}")
    return found.location


def replay_group(settings: Settings, name: str) -> str:
    """The replay's own consumer group: never one a live worker uses."""
    return f"{settings.group_prefix}-replay-{name}"


def _consumer(settings: Settings, group_id: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **client_kwargs(settings),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )


def _producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(**client_kwargs(settings), acks="all", linger_ms=5,
                            max_batch_size=512 * 1024)


async def _record_at(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> Any | None:
    consumer.seek(tp, offset)
    for _ in range(10):
        msgs = (await consumer.getmany(tp, timeout_ms=300, max_records=1)).get(tp, [])
        if msgs:
            return msgs[0]
    return None


async def offset_for_time(consumer: AIOKafkaConsumer, tp: TopicPartition, low: int, high: int,
                          ts_ms: int) -> int:
    """First offset in [low, high) whose record timestamp is >= ts_ms (high if none), by binary search."""
    lo, hi = low, high
    while lo < hi:
        mid = (lo + hi) // 2
        m = await _record_at(consumer, tp, mid)
        if m is None:  # a hole (compaction, short end offset): treat as past the end
            hi = mid
        elif m.timestamp >= ts_ms:
            hi = mid
        else:
            lo = max(mid + 1, m.offset + 1)
    return lo


async def plan_span(consumer: AIOKafkaConsumer, name: str, span: Span, warmup_ms: int) -> list[PartitionPlan]:
    """Resolve a span to per-partition (warm-up, start, end) offsets."""
    partitions = await topic_partitions(consumer, name)
    tps = [TopicPartition(name, p) for p in partitions]
    consumer.assign(tps)
    begins = await consumer.beginning_offsets(tps)
    highs = await consumer.end_offsets(tps)
    plans = []
    for tp in tps:
        p, begin, high = tp.partition, begins[tp], highs[tp]
        if span.from_offsets is not None:
            start = max(begin, span.from_offsets.get(p, begin))
        elif span.from_ms is not None:
            start = await offset_for_time(consumer, tp, begin, high, span.from_ms)
        else:
            start = begin
        end: int | None = None
        if span.to_offsets is not None and p in span.to_offsets:
            end = span.to_offsets[p]
        elif span.to_ms is not None:
            end = await offset_for_time(consumer, tp, start, high, span.to_ms)
        warm = start
        if start > begin and warmup_ms > 0:
            first = await _record_at(consumer, tp, start)
            anchor = first.timestamp if first is not None else span.from_ms
            if anchor is not None:
                warm = await offset_for_time(consumer, tp, begin, start, anchor - warmup_ms)
        plans.append(PartitionPlan(p, warm, start, end, max(high, end or 0)))
    return plans


def _approx_total(plans: list[PartitionPlan]) -> int:
    return sum(max(0, (p.end if p.end is not None else p.high) - p.warm) for p in plans)


async def _drain(pending: list[Any]) -> None:
    if pending:
        await asyncio.gather(*pending)
        pending.clear()


async def replay_edits(
    settings: Settings,
    output_prefix: str,
    span: Span = Span(),
    *,
    group_id: str | None = None,
    idle_s: float = 2.0,
    progress: Progress | None = None,
) -> ReplayReport:
    """Re-settle a span of `edits` into ``output_prefix``'s `settled` and `dead-letter`."""
    if output_prefix == settings.topic_prefix:
        raise ValueError("a replay writes under a new prefix, not the live one")
    out = replace(settings, topic_prefix=output_prefix, output_prefix="")
    await ensure_topics(out, (SETTLED, DEAD_LETTER))
    name = settings.topic(EDITS)
    cfg = settings.tracker
    warmup_ms = span.warmup_ms if span.warmup_ms is not None else default_warmup_ms(cfg)
    consumer = _consumer(settings, group_id or replay_group(settings, "edits"))
    producer = _producer(settings)
    started = time.perf_counter()
    try:
        await consumer.start()
        await producer.start()
        plans = await plan_span(consumer, name, span, warmup_ms)
        report = ReplayReport(plans)
        settlers: dict[int, SpanSettler] = {}
        active: set[TopicPartition] = set()
        for plan in plans:
            tp = TopicPartition(name, plan.partition)
            if plan.end is not None and plan.start >= plan.end:
                continue  # nothing of this partition is in the span
            settlers[plan.partition] = SpanSettler(plan.partition, plan.start, plan.end, cfg, source_topic=name,
                                                   record_time=settings.record_time,
                                                   safety_policy=settings.safety)
            consumer.seek(tp, plan.warm)
            active.add(tp)
        consumer.pause(*[TopicPartition(name, p.partition) for p in plans
                         if TopicPartition(name, p.partition) not in active])
        total = _approx_total([p for p in plans if p.partition in settlers])
        topics = {t: out.topic(t) for t in (SETTLED, DEAD_LETTER)}
        pending: list[Any] = []
        last = time.monotonic()
        while active:
            batches = await consumer.getmany(*active, timeout_ms=200, max_records=10_000)
            now = time.monotonic()
            if not any(batches.values()):
                if now - last > idle_s:
                    break  # the topic ended (or stalled): what is still open stays undecided
                continue
            last = now
            for tp, msgs in batches.items():
                if tp not in active:
                    continue
                settler = settlers[tp.partition]
                for m in msgs:
                    for o in settler.handle(m.offset, m.key, m.value, m.timestamp):
                        pending.append(await producer.send(topics[o.topic], key=o.key, value=o.value))
                    report.records += 1
                    if settler.done():
                        active.discard(tp)
                        consumer.pause(tp)
                        break
            if len(pending) >= 2000:
                await _drain(pending)
            if progress is not None:
                progress(report.records, max(total, report.records), max(0, total - report.records))
        await _drain(pending)
        await producer.flush()
        commits = {TopicPartition(name, p): s.last_offset + 1 for p, s in settlers.items()
                   if s.last_offset is not None}
        if commits:
            try:
                await consumer.commit(commits)  # the replay's own group only: a record of how far it read
            except Exception:  # noqa: BLE001 - informational; the output is already on the broker
                pass
    finally:
        report_seconds = time.perf_counter() - started
        await producer.stop()
        await consumer.stop()
    report.seconds = report_seconds
    for s in settlers.values():
        report.in_span += s.in_span
        report.suppressed += s.suppressed
        report.undecided += s.undecided()
        for k, v in s.emitted.items():
            report.emitted[k] = report.emitted.get(k, 0) + v
    if progress is not None:
        progress(report.records, report.records, 0)
    return report


async def replay_settled(
    settings: Settings,
    output_prefix: str,
    source: Any,
    config: Any,
    span: Span = Span(),
    *,
    group_id: str | None = None,
    idle_s: float = 2.0,
    progress: Progress | None = None,
) -> ReplayReport:
    """Re-score a span of `settled` with ``source`` into ``output_prefix``'s `scored`/`kept`.

    Each distinct example id is scored once (the first record of it wins, as in
    the live scorer); results equal ``score_batch`` on the same examples, because
    an example's samples depend only on (id, round, seed, model version).
    """
    from settle.schemas.codecs import InvalidRecord, decode_settled, encode
    from settle.streams.scoring.score import score_batch

    if output_prefix == settings.topic_prefix:
        raise ValueError("a replay writes under a new prefix, not the live one")
    out = replace(settings, topic_prefix=output_prefix, output_prefix="")
    await ensure_topics(out, (SCORED, KEPT, DEAD_LETTER))
    name = settings.topic(SETTLED)
    consumer = _consumer(settings, group_id or replay_group(settings, "settled"))
    producer = _producer(settings)
    started = time.perf_counter()
    seen: set[str] = set()
    try:
        await consumer.start()
        await producer.start()
        plans = await plan_span(consumer, name, replace(span, warmup_ms=0), 0)
        report = ReplayReport(plans)
        active: set[TopicPartition] = set()
        positions: dict[int, int] = {}
        for plan in plans:
            tp = TopicPartition(name, plan.partition)
            if plan.end is not None and plan.start >= plan.end:
                consumer.pause(tp)
                continue
            consumer.seek(tp, plan.start)
            active.add(tp)
        total = _approx_total(plans)
        ends = {p.partition: p.end for p in plans}
        batch: list[Any] = []
        pending: list[Any] = []

        async def flush_batch() -> None:
            if not batch:
                return
            scored = await asyncio.to_thread(score_batch, list(batch), source, config)
            batch.clear()
            for s in scored:
                key, value = s.id.encode(), encode(s)
                pending.append(await producer.send(out.topic(SCORED), key=key, value=value))
                report.emitted[SCORED] = report.emitted.get(SCORED, 0) + 1
                if s.decision.decision == "keep":
                    pending.append(await producer.send(out.topic(KEPT), key=key, value=value))
                    report.emitted[KEPT] = report.emitted.get(KEPT, 0) + 1
            await _drain(pending)

        last = time.monotonic()
        while active:
            batches = await consumer.getmany(*active, timeout_ms=200, max_records=max(1, settings.score_batch_size))
            now = time.monotonic()
            if not any(batches.values()):
                await flush_batch()
                if now - last > idle_s:
                    break
                continue
            last = now
            for tp, msgs in batches.items():
                end = ends[tp.partition]
                for m in msgs:
                    if end is not None and m.offset >= end:
                        active.discard(tp)
                        consumer.pause(tp)
                        break
                    positions[tp.partition] = m.offset + 1
                    report.records += 1
                    report.in_span += 1
                    try:
                        example = decode_settled(m.value or b"")
                    except InvalidRecord as exc:
                        letter = dead_letter(Consumed(m.topic, m.partition, m.offset, m.key, m.value or b""),
                                             exc.reason, exc.message, "replay-score")
                        pending.append(await producer.send(out.topic(DEAD_LETTER), key=letter.key, value=letter.value))
                        report.emitted[DEAD_LETTER] = report.emitted.get(DEAD_LETTER, 0) + 1
                        continue
                    if example.id in seen:
                        report.duplicates += 1
                        continue
                    seen.add(example.id)
                    batch.append(example)
                    if len(batch) >= settings.score_batch_size:
                        await flush_batch()
                if end is not None and positions.get(tp.partition, 0) >= end:
                    active.discard(tp)
                    consumer.pause(tp)
            if progress is not None:
                progress(report.records, max(total, report.records), max(0, total - report.records))
        await flush_batch()
        await _drain(pending)
        await producer.flush()
        if positions:
            try:
                await consumer.commit({TopicPartition(name, p): o for p, o in positions.items()})
            except Exception:  # noqa: BLE001 - informational
                pass
    finally:
        seconds = time.perf_counter() - started
        await producer.stop()
        await consumer.stop()
    report.seconds = seconds
    if progress is not None:
        progress(report.records, report.records, 0)
    return report
