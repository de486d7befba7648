"""The Faust app: a thin shell that moves records between Kafka and the pure settlers.

Crash safety does not rest on Faust's changelog tables (on the embedded broker
they did not recover exactly, see NOTES.md). The agent acknowledges a record
only once its outputs are on the broker *and* a checkpoint of the partition's
whole settle state covering it is durable (``streams/kafka/checkpoints.py``),
every ``checkpoint_interval_s``. A replacement worker restores that checkpoint
and re-reads only what came after it, so it emits byte-identical examples with
the same ids as a worker that never stopped, and holds (and after a crash
replays) only a few seconds of input, not the TTL of the oldest open region.

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
from faust.types import TP, EventT, StreamT

from settle.schemas.codecs import encode
from settle.schemas.events import Tick

from settle.streams.kafka import prometheus as metrics
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
    app = faust.App(f"{settings.group_prefix}-settle", **base_app_settings(settings, "settle"))
    edits = app.topic(settings.topic(EDITS), partitions=settings.partitions)
    outputs = {
        name: app.topic(settings.output_topic(name), partitions=settings.partitions)
        for name in (SETTLED, DEAD_LETTER)
    }
    checkpointing = settings.checkpoint_interval_s > 0
    store = CheckpointStore(settings) if checkpointing else None
    parts: dict[int, _Partition] = {}
    assigned: set[int] = set()
    #: one batch or one checkpoint at a time: a checkpoint taken while a batch's outputs are
    #: still in flight could be committed before they are on the broker
    busy = asyncio.Lock()
    streams: list[StreamT] = []


    def make_settler(partition: int) -> PartitionSettler:
        return PartitionSettler(
            partition, settings.tracker, source_topic=edits.get_topic_name(), record_time=settings.record_time,
            safety_policy=settings.safety,
        )

    async def load(partition: int, offset: int) -> _Partition:
        """The partition's state for a consumer about to read ``offset``: restored, or fresh."""
        part = _Partition(make_settler(partition))
        if store is None:
            return part
        started = time.perf_counter()
        try:
            found = await store.read(partition)
        except CheckpointUnavailable as exc:
            log.warning("partition %d: %s; starting from offset %d with no state", partition, exc, offset)
            metrics.CHECKPOINT_RESTORES.labels("unavailable").inc()
            return part
        if found is None:
            metrics.CHECKPOINT_RESTORES.labels("none").inc()
            return part
        source_offset, blob = found
        if source_offset < offset:
            # The committed offset is past the checkpoint (a worker without checkpoints
            # committed it): the records between are gone from reach, so the state would
            # miss them. Start empty there, as a worker without checkpoints would.
            log.warning("partition %d: checkpoint at %d is behind the committed offset %d; starting with no state",
                        partition, source_offset, offset)
            metrics.CHECKPOINT_RESTORES.labels("behind").inc()
            return part
        try:
            part.settler.restore(blob)
        except CheckpointError as exc:
            log.error("partition %d: %s; starting from offset %d with no state", partition, exc, offset)
            metrics.CHECKPOINT_RESTORES.labels("corrupt").inc()
            return _Partition(make_settler(partition))
        part.covered = source_offset
        metrics.CHECKPOINT_RESTORES.labels("restored").inc()
        metrics.CHECKPOINT_SECONDS.labels("restore").observe(time.perf_counter() - started)
        log.info("partition %d: restored its checkpoint at offset %d (%d bytes)", partition, source_offset, len(blob))
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

    @app.agent(edits, name="settle")
    async def settle(stream: StreamT) -> None:
        streams.append(stream)
        async for batch in stream.noack_take(settings.batch_size, within=settings.batch_within_s):
            async with busy:
                await _handle_batch(stream, batch)

    async def _handle_batch(stream: StreamT, batch: list[EventT]) -> None:
        deliveries: list[Any] = []
        touched: set[int] = set()
        started = time.perf_counter()
        for event in batch:
            message = event.message
            partition, offset = message.partition, message.offset
            if partition not in assigned:
                continue  # stale record of a revoked partition: the new owner re-reads it
            part = parts.get(partition)
            if part is None:
                part = parts[partition] = await load(partition, offset)
            settler = part.settler
            if settler.next_offset is not None and offset < settler.next_offset:
                if offset >= part.covered:
                    # The consumer rewound (a rebalance handed the partition back and it
                    # resumed from the committed offset): go back to the durable state.
                    part = parts[partition] = await load(partition, offset)
                    settler = part.settler
                if settler.next_offset is not None and offset < settler.next_offset:
                    part.pending.append(event)  # already reflected in the restored state
                    touched.add(partition)
                    continue
            # Faust gives the record timestamp in seconds; the partition clock counts ms.
            stamp = message.timestamp
            stamp_ms = round(stamp * 1000) if stamp is not None else None
            for out in settler.handle(offset, message.key, message.value, stamp_ms):
                fut = await outputs[out.topic].send(key=out.key, value=out.value, force=True)
                deliveries.append(fut)
                metrics.OUTPUTS.labels(out.topic).inc()
            part.pending.append(event)
            touched.add(partition)
        if batch:
            metrics.EVENT_SECONDS.observe((time.perf_counter() - started) / len(batch))
        if deliveries:
            await asyncio.gather(*deliveries)
        for partition in touched:
            part = parts.get(partition)
            if part is not None:
                await _commit_point(stream, partition, part)
        metrics.observe_settlers({p: part.settler for p, part in parts.items()})

    if store is not None:

        @app.timer(max(0.5, settings.checkpoint_interval_s / 2))
        async def checkpoint_quiet_partitions() -> None:
            """Checkpoint partitions whose input stopped, so what they hold gets committed too."""
            if not streams:
                return
            async with busy:
                for partition, part in list(parts.items()):
                    if part.pending and partition in assigned:
                        await _commit_point(streams[0], partition, part)

    async def _commit_point(stream: StreamT, partition: int, part: _Partition) -> None:
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
        metrics.HELD_RECORDS.labels(str(partition)).set(len(queue))
        while queue and safe is not None and queue[0].message.offset < safe:
            await stream.ack(queue.popleft())

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

    __slots__ = ("settler", "pending", "covered", "checkpointed_at")

    def __init__(self, settler: PartitionSettler) -> None:
        self.settler = settler
        #: records handled but not yet acknowledged, in offset order
        self.pending: collections.deque[EventT] = collections.deque()
        #: offsets below this are in the last durable checkpoint (-1: none)
        self.covered = -1
        self.checkpointed_at = time.monotonic()


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
