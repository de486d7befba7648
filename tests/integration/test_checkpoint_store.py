"""The checkpoint store on a real broker: chunked writes, the pointer, and what a bad pointer gives."""

from __future__ import annotations

import asyncio
import os

import pytest

from settle.streams.kafka.checkpoints import CHUNK_BYTES, CheckpointStore, CheckpointUnavailable, assemble, chunks
from settle.streams.kafka.topics import ensure_topics
from settle.streams.settings import CHECKPOINTS, Settings


def test_chunks_round_trip_and_refuse_mixtures() -> None:
    blob = os.urandom(3 * 1000 + 17)
    records = chunks(2, 40, blob, size=1000)
    assert len(records) == 4
    assert assemble(records) == (40, blob)
    assert assemble(chunks(0, 0, b"")) == (0, b"")
    other = chunks(2, 41, os.urandom(len(blob)), size=1000)
    with pytest.raises(CheckpointUnavailable, match="different checkpoints"):
        assemble(records[:2] + other[2:])
    with pytest.raises(CheckpointUnavailable, match="missing"):
        assemble(records[:3])
    with pytest.raises(CheckpointUnavailable, match="unreadable"):
        assemble([b"\xff\x00garbage"])


def test_store_writes_chunks_and_reads_back_the_latest(settings: Settings) -> None:
    async def scenario() -> None:
        await ensure_topics(settings, (CHECKPOINTS,))
        store = CheckpointStore(settings)
        try:
            assert await store.read(0) is None  # never checkpointed
            big = os.urandom(2 * CHUNK_BYTES + 5)  # three records
            await store.write(0, 100, b"first")
            at = await store.write(0, 250, big)
            await store.write(1, 7, b"other partition")
            assert await store.read(0) == (250, big)
            assert await store.read(1) == (7, b"other partition")
        finally:
            await store.stop()
        # a new store (a replacement worker) finds the same through the pointer
        again = CheckpointStore(settings)
        try:
            assert await again.read(0) == (250, big)
            assert at >= 1
        finally:
            await again.stop()

    asyncio.run(scenario())


def test_a_pointer_past_the_records_is_unavailable_not_a_hang(settings: Settings) -> None:
    async def scenario() -> None:
        await ensure_topics(settings, (CHECKPOINTS,))
        store = CheckpointStore(settings)
        try:
            await store.write(0, 5, b"state")
            _, consumer = await store._start()
            from aiokafka import TopicPartition

            await consumer.commit({TopicPartition(store.topic, 0): 10_000})  # names no record
            with pytest.raises(CheckpointUnavailable):
                await store.read(0, timeout_s=3)
        finally:
            await store.stop()

    asyncio.run(scenario())
