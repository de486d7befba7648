"""The Faust app: a thin shell that moves records between Kafka and the pure settlers.

Crash safety does not rest on Faust's changelog tables (on the embedded broker
they did not recover exactly, see NOTES.md). Instead the agent acknowledges a
record only once every region born at or before it has been settled or
dropped *and* the outputs are on the broker, so the committed offset is always
a safe restart point: a replacement worker re-reads from there, rebuilds the
open regions deterministically, and at worst re-emits byte-identical examples
with the same ids.
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
from settle.streams.kafka.security import faust_broker_settings
from settle.streams.settings import DEAD_LETTER, EDITS, SETTLED, Settings
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
    settlers: dict[int, PartitionSettler] = {}
    pending: dict[int, collections.deque[EventT]] = {}
    assigned: set[int] = set()

    def fresh(partition: int) -> None:
        settlers[partition] = PartitionSettler(
            partition, settings.tracker, source_topic=edits.get_topic_name(), record_time=settings.record_time,
            safety_policy=settings.safety,
        )
        pending[partition] = collections.deque()

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        for tp in revoked:
            if tp.topic == edits.get_topic_name():
                assigned.discard(tp.partition)
                settlers.pop(tp.partition, None)
                pending.pop(tp.partition, None)

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned_tps: set[TP], **kwargs: Any) -> None:
        for tp in assigned_tps:
            if tp.topic == edits.get_topic_name() and tp.partition not in assigned:
                # The consumer resumes from the committed (safe) offset, so
                # state is rebuilt from scratch rather than carried over.
                assigned.add(tp.partition)
                fresh(tp.partition)
        log.info("settle worker %s owns partitions %s", worker_id, sorted(assigned))

    @app.agent(edits, name="settle")
    async def settle(stream: StreamT) -> None:
        async for batch in stream.noack_take(settings.batch_size, within=settings.batch_within_s):
            deliveries: list[Any] = []
            touched: set[int] = set()
            for event in batch:
                message = event.message
                partition = message.partition
                if partition not in assigned:
                    continue  # stale record of a revoked partition: the new owner re-reads it
                settler = settlers[partition]
                if settler.next_offset is not None and message.offset < settler.next_offset:
                    # The consumer rewound (a rebalance handed the partition back and it
                    # resumed from the committed offset): rebuild from here, as a new owner would.
                    fresh(partition)
                    settler = settlers[partition]
                started = time.perf_counter()
                # Faust gives the record timestamp in seconds; the partition clock counts ms.
                stamp = message.timestamp
                stamp_ms = round(stamp * 1000) if stamp is not None else None
                for out in settler.handle(message.offset, message.key, message.value, stamp_ms):
                    fut = await outputs[out.topic].send(key=out.key, value=out.value, force=True)
                    deliveries.append(fut)
                    metrics.OUTPUTS.labels(out.topic).inc()
                metrics.EVENT_SECONDS.observe(time.perf_counter() - started)
                pending[partition].append(event)
                touched.add(partition)
            if deliveries:
                await asyncio.gather(*deliveries)
            for partition in touched:
                await _ack_below_safe_offset(stream, partition)
            metrics.observe_settlers(settlers)

    async def _ack_below_safe_offset(stream: StreamT, partition: int) -> None:
        settler, queue = settlers.get(partition), pending.get(partition)
        if settler is None or queue is None:
            return
        safe = settler.safe_offset()
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


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Run the settle agent until interrupted (the process is the worker)."""
    from settle.streams.kafka.topics import ensure_topics_sync

    ensure_topics_sync(settings)
    if settings.output_prefix:
        ensure_topics_sync(replace(settings, topic_prefix=settings.output_prefix))
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
