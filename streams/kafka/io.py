"""Plain aiokafka producing and consuming for the CLI, tests and benchmarks.

Kept apart from the Faust app: reading a topic to the end or pushing a JSONL
file needs no agents, and the embedded broker's end offsets are not to be
trusted (NOTES.md), so "the end" here means "no record for a while".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from settle.schemas.events import buffer_key
from settle.streams.kafka.security import client_kwargs
from settle.streams.records import Output
from settle.streams.settings import DEAD_LETTER, EDITS, Settings


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def key_of(raw: bytes) -> tuple[bytes | None, bool]:
    """(Kafka key, is_tick) of a raw event line, without validating it.

    Invalid lines still get produced (keyless) so the worker can dead-letter
    them with a reason, exactly as it would for a bad editor.
    """
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None, False
    if not isinstance(obj, dict):
        return None, False
    if obj.get("kind") == "tick":
        return None, True
    session, path = obj.get("session_id"), obj.get("path")
    if isinstance(session, str) and isinstance(path, str):
        return buffer_key(session, path).encode(), False
    return None, False


async def produce_lines(
    settings: Settings, lines: Iterable[bytes], topic: str = EDITS, timestamps: Iterable[int] | None = None
) -> int:
    """Send raw event lines to `edits`, keyed by buffer; a tick goes to every partition.

    ``timestamps`` (ms, one per line) set the Kafka record timestamps, as the ingest
    endpoint does with its wall clock; by default the producer stamps them.
    """
    stamps = iter(timestamps) if timestamps is not None else None
    name = settings.topic(topic)
    producer = AIOKafkaProducer(
        **client_kwargs(settings), acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    sent = 0
    try:
        await producer.start()
        partitions = sorted(await producer.partitions_for(name))
        pending = []
        for raw in lines:
            key, is_tick = key_of(raw)
            targets = partitions if is_tick else [None]
            stamp = next(stamps) if stamps is not None else None
            for p in targets:
                pending.append(await producer.send(name, value=raw, key=key, partition=p, timestamp_ms=stamp))
                sent += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def iter_topic(
    settings: Settings,
    topic: str,
    *,
    group_id: str | None = None,
    idle_s: float = 3.0,
    max_s: float = 120.0,
    until: int | None = None,
) -> AsyncIterator[Record]:
    """Records of a topic from the beginning (or the group's offset) until idle."""
    name = settings.topic(topic)
    consumer = AIOKafkaConsumer(
        name,
        **client_kwargs(settings),
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=group_id is not None,
    )
    try:
        await consumer.start()
        count = 0
        started = last = time.monotonic()
        while True:
            now = time.monotonic()
            if now - last > idle_s or now - started > max_s or (until is not None and count >= until):
                return
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, msgs in batches.items():
                for m in msgs:
                    last = time.monotonic()
                    count += 1
                    yield Record(tp.topic, tp.partition, m.offset, m.key, m.value or b"")
    finally:
        await consumer.stop()


async def read_topic(settings: Settings, topic: str, **kwargs: object) -> list[Record]:
    return [r async for r in iter_topic(settings, topic, **kwargs)]  # type: ignore[arg-type]


__all__ = ["MissingTopic", "Record", "TopicPartition", "broker_topics", "iter_topic", "key_of", "produce_lines",
           "read_topic", "require_topics"]


async def produce_dead_letters(settings: Settings, letters: Iterable[Output]) -> int:
    """Send dead letters (built by ``settle.streams.records.dead_letter``) to `dead-letter`; waits for each ack."""
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    sent = 0
    try:
        await producer.start()
        for letter in letters:
            await producer.send_and_wait(settings.output_topic(DEAD_LETTER), key=letter.key, value=letter.value)
            sent += 1
    finally:
        await producer.stop()
    return sent


async def committed_offsets(settings: Settings, group_id: str, topic: str = EDITS) -> dict[int, int]:
    """The offsets a consumer group has committed on a topic, by partition."""
    name = settings.topic(topic)
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=group_id, enable_auto_commit=False)
    try:
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, name, timeout_s=0)
        except LookupError:
            return {}
        out = {}
        for p in partitions:
            offset = await consumer.committed(TopicPartition(name, p))
            if offset is not None:
                out[p] = offset
        return out
    finally:
        await consumer.stop()


class MissingTopic(LookupError):
    """A topic a command reads is not on the broker (reading it would have the broker auto-create it)."""


async def broker_topics(settings: Settings, timeout_s: float = 10.0) -> set[str]:
    """Every topic on the broker: one metadata request, which creates nothing.

    Raises aiokafka's KafkaConnectionError when no broker answers (within ``timeout_s``).
    """
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False,
                                request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
        return set(await asyncio.wait_for(consumer.topics(), timeout_s))
    finally:
        await consumer.stop()


async def require_topics(settings: Settings, *topics: str) -> None:
    """Raise MissingTopic naming the first of these logical topics that is not on the broker."""
    present = await broker_topics(settings)
    for topic in topics:
        if settings.topic(topic) not in present:
            raise MissingTopic(
                f"topic {settings.topic(topic)!r} does not exist on the broker at {settings.bootstrap} "
                f"(is the prefix {settings.topic_prefix!r} right? `settle topics` creates settle's topics)"
            )


async def topic_partitions(consumer: AIOKafkaConsumer, name: str, timeout_s: float = 10.0) -> list[int]:
    """A topic's partitions, retried for ``timeout_s``; LookupError if it does not exist."""
    deadline = time.monotonic() + timeout_s
    while True:
        # No public way to fetch a topic's metadata without subscribing to it.
        await consumer._client.force_metadata_update()  # noqa: SLF001
        parts = consumer.partitions_for_topic(name)
        if parts:
            return sorted(parts)
        if time.monotonic() >= deadline:
            raise LookupError(f"topic {name!r} not found")
        await asyncio.sleep(0.2)
