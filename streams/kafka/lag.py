"""Consumer lag per partition for a worker's metrics: end offset minus the group's committed offset.

Read with a separate, group-less consumer in a background thread every few seconds, so it
works the same for the Faust apps (whose consumer group is the app id) and needs no hook
inside the agents. On the embedded broker end offsets can be slightly off (NOTES.md), so
its lag figures are approximate there; on Kafka they are the usual ones.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from aiokafka import AIOKafkaConsumer, TopicPartition

from settle.streams.kafka import prometheus as metrics
from settle.streams.kafka.io import topic_partitions
from settle.streams.kafka.security import client_kwargs
from settle.streams.settings import Settings

log = logging.getLogger("settle.lag")


async def group_lag(settings: Settings, group_id: str, topic: str) -> dict[int, int]:
    """{partition: records behind} of ``group_id`` on a logical topic (no commit yet = all records)."""
    name = settings.topic(topic)
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=group_id, enable_auto_commit=False)
    try:
        await consumer.start()
        tps = [TopicPartition(name, p) for p in await topic_partitions(consumer, name, timeout_s=0)]
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        lag = {}
        for tp in tps:
            committed = await consumer.committed(tp)
            lag[tp.partition] = max(0, ends[tp] - (starts[tp] if committed is None else committed))
        return lag
    finally:
        await consumer.stop()


async def watch_lag(settings: Settings, group_id: str, topic: str, interval_s: float = 5.0) -> None:
    while True:
        try:
            for partition, n in (await group_lag(settings, group_id, topic)).items():
                metrics.CONSUMER_LAG.labels(group_id, settings.topic(topic), str(partition)).set(n)
        except Exception as exc:  # a broker hiccup must not stop the worker's metrics
            log.debug("lag of %s on %s: %s", group_id, topic, exc)
        await asyncio.sleep(interval_s)


def start_lag_monitor(settings: Settings, group_id: str, topic: str, interval_s: float = 5.0) -> threading.Thread:
    """Export ``settle_consumer_lag_records`` for the group from a daemon thread (its own event loop)."""
    thread = threading.Thread(target=lambda: asyncio.run(watch_lag(settings, group_id, topic, interval_s)),
                              name=f"lag-{group_id}", daemon=True)
    thread.start()
    return thread


def serve_metrics(settings: Settings, port: int | None, group_id: str | None = None, topic: str | None = None) -> int:
    """Serve Prometheus metrics on ``port`` (None = SETTLE_METRICS_PORT; 0 = off); export the group's lag too.

    Returns the port served (0 when off). Any path answers with the metrics, so `/metrics`
    doubles as the liveness endpoint of workers and scorers.
    """
    from prometheus_client import start_http_server

    port = settings.metrics_port if port is None else port
    if not port:
        return 0
    start_http_server(port)
    if group_id and topic:
        start_lag_monitor(settings, group_id, topic)
    return port
