"""Checkpoints of settle partitions on Kafka, and the pointer that finds the latest one.

A checkpoint (bytes from ``PartitionSettler.checkpoint``) goes to the
``settle-checkpoints`` topic, in the partition of the same number as the `edits`
partition it belongs to, split into chunks of at most :data:`CHUNK_BYTES` (a
Kafka record has a size limit; a partition's state can exceed it). Once every
chunk is acknowledged, the offset of its first chunk is committed as the
*pointer* in a consumer group of its own (``<group_prefix>-settle-checkpoints``).
Restoring reads exactly that checkpoint: the time to restore does not grow with
the topic, and the topic needs no compaction (Tansu 0.6.0 has none; its end
offsets are unreliable, see NOTES.md, so "read the last record" is not an option).

Order of writes, which is what makes a crash at any point safe: outputs of the
records below ``source_offset`` are on the broker, then the checkpoint, then the
pointer, then (by the agent) the `edits` offset. A crash before the pointer
leaves the previous checkpoint in force; one between the pointer and the `edits`
commit restores a checkpoint ahead of the committed offset, and the agent
skips what it already reflects.

The topic holds raw in-flight telemetry (open regions' text and context, not
yet scrubbed), like `edits`: it is created with ``retention.ms`` =
:data:`settle.streams.kafka.topics.CHECKPOINT_RETENTION_MS` (a day) and should be readable only by settle workers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from settle.streams.kafka.security import client_kwargs
from settle.streams.settings import CHECKPOINTS, Settings

log = logging.getLogger("settle.checkpoints")

#: bytes of checkpoint per Kafka record (well under the 1 MB default request size)
CHUNK_BYTES = 512 * 1024


class Chunk(msgspec.Struct, array_like=True):
    """One record of the checkpoint topic."""

    partition: int
    #: the `edits` offset the checkpoint covers up to (exclusive)
    source_offset: int
    index: int
    count: int
    #: blake2b-128 of the whole checkpoint, the same in every chunk
    digest: str
    data: bytes


_chunk_decoder = msgspec.msgpack.Decoder(Chunk)
_chunk_encoder = msgspec.msgpack.Encoder()


class CheckpointUnavailable(RuntimeError):
    """The pointer names a checkpoint that cannot be read back whole."""


def chunks(partition: int, source_offset: int, blob: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    """The records one checkpoint is written as (at least one, also for an empty blob)."""
    digest = hashlib.blake2b(blob, digest_size=16).hexdigest()
    parts = [blob[i:i + size] for i in range(0, len(blob), size)] or [b""]
    return [_chunk_encoder.encode(Chunk(partition, source_offset, i, len(parts), digest, p)) for i, p in enumerate(parts)]


def assemble(records: list[bytes]) -> tuple[int, bytes]:
    """(source_offset, blob) from a checkpoint's records in order; raises CheckpointUnavailable."""
    try:
        parts = [_chunk_decoder.decode(r) for r in records]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CheckpointUnavailable(f"unreadable checkpoint record: {exc}") from None
    if not parts or len(parts) != parts[0].count or [p.index for p in parts] != list(range(parts[0].count)):
        raise CheckpointUnavailable("checkpoint chunks missing or out of order")
    first = parts[0]
    if any((p.partition, p.source_offset, p.digest) != (first.partition, first.source_offset, first.digest)
           for p in parts):
        raise CheckpointUnavailable("checkpoint chunks from different checkpoints")
    blob = b"".join(p.data for p in parts)
    if hashlib.blake2b(blob, digest_size=16).hexdigest() != first.digest:
        raise CheckpointUnavailable("checkpoint digest mismatch")
    return first.source_offset, blob


class CheckpointStore:
    """Writes and finds the latest checkpoint of each `edits` partition (started lazily)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic(CHECKPOINTS)
        self.group = f"{settings.group_prefix}-settle-checkpoints"
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _start(self) -> tuple[AIOKafkaProducer, AIOKafkaConsumer]:
        async with self._lock:
            if self._producer is None or self._consumer is None:
                producer = AIOKafkaProducer(**client_kwargs(self.settings), acks="all",
                                            max_request_size=4 * CHUNK_BYTES, linger_ms=0)
                consumer = AIOKafkaConsumer(**client_kwargs(self.settings), group_id=self.group,
                                            enable_auto_commit=False,
                                            auto_offset_reset="none", fetch_max_bytes=8 * CHUNK_BYTES,
                                            max_partition_fetch_bytes=4 * CHUNK_BYTES)
                await producer.start()
                await consumer.start()
                partitions = range(self.settings.partitions)
                consumer.assign([TopicPartition(self.topic, p) for p in partitions])
                self._producer, self._consumer = producer, consumer
            return self._producer, self._consumer

    async def write(self, partition: int, source_offset: int, blob: bytes) -> int:
        """Store a checkpoint and move the pointer to it; returns its first record's offset."""
        producer, consumer = await self._start()
        futures = [await producer.send(self.topic, value=r, key=str(partition).encode(), partition=partition)
                   for r in chunks(partition, source_offset, blob)]
        metadata = await asyncio.gather(*futures)
        first = metadata[0].offset
        await consumer.commit({TopicPartition(self.topic, partition): first})
        return first

    async def read(self, partition: int, timeout_s: float = 30.0) -> tuple[int, bytes] | None:
        """(source_offset, blob) of the latest checkpoint of ``partition``, or None if it never had one.

        Raises CheckpointUnavailable when the pointer exists but its records cannot
        be read back whole (retention removed them, or they are corrupt).
        """
        _, consumer = await self._start()
        tp = TopicPartition(self.topic, partition)
        pointer = await consumer.committed(tp)
        if pointer is None or pointer < 0:
            return None
        consumer.seek(tp, pointer)
        records: list[bytes] = []
        expected: int | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while expected is None or len(records) < expected:
                left = deadline - loop.time()
                if left <= 0:
                    raise CheckpointUnavailable(f"checkpoint at {self.topic}[{partition}]@{pointer} not read in {timeout_s:g} s")
                batch = await consumer.getmany(tp, timeout_ms=int(min(left, 1.0) * 1000), max_records=64)
                for message in batch.get(tp, []):
                    if expected is None:
                        if message.offset != pointer:
                            raise CheckpointUnavailable(
                                f"pointer {pointer} of partition {partition} names a record no longer there"
                                f" (first readable: {message.offset})")
                        expected = _chunk_decoder.decode(message.value).count
                    if len(records) < expected:
                        records.append(message.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CheckpointUnavailable(f"unreadable checkpoint record: {exc}") from None
        except Exception as exc:  # aiokafka's OffsetOutOfRangeError and friends
            if isinstance(exc, CheckpointUnavailable):
                raise
            raise CheckpointUnavailable(f"checkpoint of partition {partition} at {pointer}: {exc!r}") from None
        return assemble(records)

    async def stop(self) -> None:
        for client in (self._producer, self._consumer):
            if client is not None:
                try:
                    await client.stop()
                except Exception:  # pragma: no cover - best effort on shutdown
                    pass
        self._producer = self._consumer = None
