"""The Faust app: a thin shell that moves records between Kafka and the pure settlers.

Crash safety does not rest on Faust's changelog tables (on the embedded broker
they did not recover exactly, see NOTES.md). The agent acknowledges a record
only once its outputs are on the broker *and* a checkpoint of the partition's
whole settle state covering it is durable (``streams/kafka/checkpoints.py``),
every ``checkpoint_interval_s``. A replacement worker restores that checkpoint
and re-reads only what came after it, so it emits byte-identical examples with
the same ids as a worker that never stopped, and holds (and after a crash
replays) only a few seconds of input, not the TTL of the oldest open region.

Records come to the agent a broker fetch at a time (``BatchApp``,
``streams/kafka/batching.py``), not one by one through Faust's conductor, queue
and stream, which cost several times the settling itself (bench/settle_throughput.py).

With ``checkpoint_interval_s = 0`` it falls back to committing only below the
oldest open region's birth and rebuilding from there (no checkpoint topic).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from dataclasses import replace
from typing import Any

import faust
from faust.types import TP, Message

from settle.schemas.codecs import encode
from settle.schemas.events import Tick

from settle.streams.kafka import prometheus as metrics
from settle.streams.kafka.batching import BatchApp
from settle.streams.kafka.checkpoints import CheckpointStore, CheckpointUnavailable
from settle.streams.kafka.security import faust_broker_settings
from settle.streams.settings import CHECKPOINTS, DEAD_LETTER, EDITS, SETTLED, Settings
from settle.streams.settling.checkpoint import CheckpointError
from settle.streams.settling.partition import PartitionSettler

log = logging.getLogger("settle.worker")


def base_app_settings(settings: Settings, role: str) -> dict[str, Any]:
    """Faust settings every settle app shares: raw bytes in and out, fast rejoin after a crash."""
    (settings.data_dir / role).mkdir(parents=True, exist_ok=True)
    return dict(
        **faust_broker_settings(settings),
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        datadir=str(settings.data_dir / role),
        topic_partitions=settings.partitions,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        topic_disable_leader=True,
    )


def create_app(settings: Settings, worker_id: str | None = None) -> faust.App:
    """Build the Faust app with the settle agent (and the live ticker when enabled)."""
    worker_id = worker_id or f"{os.uname().nodename}-{os.getpid()}"
    # BatchApp: each fetch of `edits` comes to `settle` below as one list, not record by record
    # through Faust's conductor, queue and stream (streams/kafka/batching.py).
    app = BatchApp(f"{settings.group_prefix}-settle", **base_app_settings(settings, "settle"))
    edits = app.topic(settings.topic(EDITS), partitions=settings.partitions)
    outputs = {
        name: app.topic(settings.output_topic(name), partitions=settings.partitions)
        for name in (SETTLED, DEAD_LETTER)
    }
    store = CheckpointStore(settings) if settings.checkpoint_interval_s > 0 else None
    parts: dict[int, _Partition] = {}
    assigned: set[int] = set()
    #: one batch or one checkpoint at a time: a checkpoint taken while a batch's outputs are
    #: still in flight could be committed before they are on the broker
    busy = asyncio.Lock()

    def make_settler(partition: int) -> PartitionSettler:
        return PartitionSettler(
            partition, settings.tracker, source_topic=edits.get_topic_name(), record_time=settings.record_time,
            safety_policy=settings.safety,
        )

    async def load(partition: int) -> _Partition:
        """The partition's durable state: restored from its checkpoint, or fresh."""
        part = _Partition(make_settler(partition))
        if store is None:
            return part
        started = time.perf_counter()
        try:
            found = await store.read(partition)
        except CheckpointUnavailable as exc:
            log.warning("partition %d: %s; starting with no state", partition, exc)
            metrics.CHECKPOINT_RESTORES.labels("unavailable").inc()
            return part
        if found is None:
            metrics.CHECKPOINT_RESTORES.labels("none").inc()
            return part
        source_offset, blob = found
        try:
            part.settler.restore(blob)
        except CheckpointError as exc:
            log.error("partition %d: %s; starting with no state", partition, exc)
            metrics.CHECKPOINT_RESTORES.labels("corrupt").inc()
            return _Partition(make_settler(partition))
        part.covered = source_offset
        metrics.CHECKPOINT_RESTORES.labels("restored").inc()
        metrics.CHECKPOINT_SECONDS.labels("restore").observe(time.perf_counter() - started)
        log.info("partition %d: restored its checkpoint at offset %d (%d bytes)", partition, source_offset, len(blob))
        return part

    def behind(partition: int, part: _Partition, offset: int) -> _Partition:
        """The state to apply the partition's first record (at ``offset``) to.

        A checkpoint behind the committed offset (one a worker without checkpoints
        committed past) misses the records between, so its state would be wrong:
        start empty there instead, as a worker without checkpoints would.
        """
        part.started = True
        if 0 <= part.covered < offset:
            log.warning("partition %d: checkpoint at %d is behind the committed offset %d; starting with no state",
                        partition, part.covered, offset)
            metrics.CHECKPOINT_RESTORES.labels("behind").inc()
            part = _Partition(make_settler(partition))
            part.started = True
        return part

    if store is not None:

        @app.on_before_shutdown.connect
        async def _close_store(sender: Any, **kwargs: Any) -> None:
            await store.stop()

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        # Let a batch or checkpoint in flight finish first: a checkpoint written after
        # the next owner took over could move the pointer back behind its commits.
        async with busy:
            for tp in revoked:
                if tp.topic == edits.get_topic_name():
                    assigned.discard(tp.partition)
                    parts.pop(tp.partition, None)

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned_tps: set[TP], **kwargs: Any) -> None:
        for tp in assigned_tps:
            if tp.topic == edits.get_topic_name() and tp.partition not in assigned:
                # State is loaded on the partition's first record (restored from its
                # checkpoint, or rebuilt from the committed offset), not carried over.
                assigned.add(tp.partition)
        log.info("settle worker %s owns partitions %s", worker_id, sorted(assigned))

    async def settle(batch: list[Message]) -> None:
        async with busy:
            await _handle_batch(batch)

    app.topics.add(edits)  # subscribed with no agent: its records go to `settle` a fetch at a time
    app.batch_handlers[edits.get_topic_name()] = settle

    async def _handle_batch(batch: list[Message]) -> None:
        deliveries: list[Any] = []
        touched: set[int] = set()
        started = time.perf_counter()
        for message in batch:
            partition, offset = message.partition, message.offset
            if partition not in assigned:
                continue  # stale record of a revoked partition: the new owner re-reads it
            part = parts.get(partition)
            if part is None:
                part = parts[partition] = await load(partition)
            if not part.started:
                part = parts[partition] = behind(partition, part, offset)
            settler = part.settler
            if settler.next_offset is not None and offset < settler.next_offset:
                if offset >= part.covered:
                    # The consumer rewound (a rebalance handed the partition back and it
                    # resumed from the committed offset): go back to the durable state.
                    part = parts[partition] = behind(partition, await load(partition), offset)
                    settler = part.settler
                if settler.next_offset is not None and offset < settler.next_offset:
                    part.pending.append(message)  # already reflected in the restored state
                    touched.add(partition)
                    continue
            # Faust gives the record timestamp in seconds; the partition clock counts ms.
            stamp = message.timestamp
            stamp_ms = round(stamp * 1000) if stamp is not None else None
            for out in settler.handle(offset, message.key, message.value, stamp_ms):
                fut = await outputs[out.topic].send(key=out.key, value=out.value, force=True)
                deliveries.append(fut)
                metrics.OUTPUTS.labels(out.topic).inc()
            part.pending.append(message)
            touched.add(partition)
        if batch:
            metrics.EVENT_SECONDS.observe((time.perf_counter() - started) / len(batch))
        if deliveries:
            await asyncio.gather(*deliveries)
        for partition in touched:
            part = parts.get(partition)
            if part is not None:
                await _commit_point(partition, part)
        metrics.observe_settlers({p: part.settler for p, part in parts.items()})

    @app.timer(max(0.5, settings.checkpoint_interval_s / 2) if store is not None else 1.0)
    async def maintain() -> None:
        """Load newly assigned partitions' state, and checkpoint partitions whose input stopped.

        Loading at once (not on a partition's first record) keeps its gauges and
        open regions visible while it is quiet; checkpointing quiet partitions gets
        what they hold committed too.
        """
        async with busy:
            for partition in sorted(assigned - set(parts)):
                parts[partition] = await load(partition)
            for partition, part in list(parts.items()):
                if part.pending and partition in assigned:
                    await _commit_point(partition, part)
            metrics.observe_settlers({p: part.settler for p, part in parts.items()})

    async def _commit_point(partition: int, part: _Partition) -> None:
        """Checkpoint when due, then acknowledge every record the durable state covers."""
        settler = part.settler
        if store is None:
            safe = settler.safe_offset()
        else:
            due = (time.monotonic() - part.checkpointed_at >= settings.checkpoint_interval_s
                   or len(part.pending) >= settings.checkpoint_max_held)
            if due and settler.next_offset is not None and settler.next_offset > part.covered:
                started = time.perf_counter()
                blob = settler.checkpoint()
                await store.write(partition, settler.next_offset, blob)
                part.covered, part.checkpointed_at = settler.next_offset, time.monotonic()
                metrics.CHECKPOINT_SECONDS.labels("write").observe(time.perf_counter() - started)
                metrics.CHECKPOINT_BYTES.labels(str(partition)).set(len(blob))
            safe = part.covered
        queue = part.pending
        ack = app.consumer.ack
        while queue and safe is not None and queue[0].offset < safe:
            ack(queue.popleft())
        metrics.HELD_RECORDS.labels(str(partition)).set(len(queue))

    if settings.tick_interval_s > 0:

        @app.timer(settings.tick_interval_s)
        async def tick() -> None:
            """Carry the wall clock into every owned partition, so quiet ones still settle."""
            value = encode(Tick(time_ms=int(time.time() * 1000), source=worker_id))
            for partition in sorted(assigned):
                await edits.send(value=value, partition=partition, force=True)

    return app


class _Partition:
    """What the agent keeps per owned partition."""

    __slots__ = ("settler", "pending", "covered", "checkpointed_at", "started")

    def __init__(self, settler: PartitionSettler) -> None:
        self.settler = settler
        #: records handled but not yet acknowledged, in offset order
        self.pending: collections.deque[Message] = collections.deque()
        #: offsets below this are in the last durable checkpoint (-1: none)
        self.covered = -1
        self.checkpointed_at = time.monotonic()
        #: whether a record was applied since it was loaded (the first one is checked against ``covered``)
        self.started = False


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Run the settle agent until interrupted (the process is the worker)."""
    from settle.streams.kafka.topics import ensure_topics_sync

    ensure_topics_sync(settings)
    if settings.checkpoint_interval_s > 0:
        ensure_topics_sync(settings, (CHECKPOINTS,))
    if settings.output_prefix:
        ensure_topics_sync(replace(settings, topic_prefix=settings.output_prefix))
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
