"""The trainer's `kept` reader against the real broker: reads from the group's offsets, commits only when told."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from settle.schemas.codecs import encode
from settle.streams.kafka.io import committed_offsets
from settle.streams.kafka.topics import ensure_topics_sync
from settle.streams.settings import KEPT, Settings
from settle.trainer.data.kept_topic import commit_kept, read_kept, trainer_group_id
from tests.support.examples import make, scored

# --------------------------------------------------------------------------- helpers

async def _produce(settings: Settings, values: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in values:
            await producer.send_and_wait(settings.topic(KEPT), value=value, key=key)
    finally:
        await producer.stop()


@pytest.mark.broker
@pytest.mark.slow
def test_read_kept_commits_only_when_told(settings: Settings) -> None:
    ensure_topics_sync(settings, (KEPT,))
    group = trainer_group_id(settings)
    first = [scored(make(f"a{i}", f"v = {i}\n", f"v = {i + 1}\n")) for i in range(6)]
    asyncio.run(_produce(settings, [(s.id.encode(), encode(s)) for s in first] + [(b"junk", b"not json{")]))

    batch = asyncio.run(read_kept(settings, group, idle_s=2.0))
    assert sorted(s.id for s in batch.scored) == sorted(s.id for s in first)
    assert [(u.key, u.reason) for u in batch.undecodable] == [(b"junk", "malformed")]
    assert batch.undecodable_by_reason == {"malformed": 1}
    assert batch.start_offsets == {p: 0 for p in range(settings.partitions)}
    assert sum(batch.end_offsets.values()) == 7 == batch.records_read

    # Not committed: a trainer that crashed now reads the same records again.
    again = asyncio.run(read_kept(settings, group, idle_s=2.0))
    assert sorted(s.id for s in again.scored) == sorted(s.id for s in first)
    assert again.end_offsets == batch.end_offsets and len(again.undecodable) == 1

    asyncio.run(commit_kept(settings, group, batch.end_offsets))
    assert asyncio.run(committed_offsets(settings, group, KEPT)) == batch.end_offsets
    second = [scored(make(f"b{i}", f"w = {i}\n", f"w = {i + 1}\n")) for i in range(3)]
    asyncio.run(_produce(settings, [(s.id.encode(), encode(s)) for s in second]))

    nxt = asyncio.run(read_kept(settings, group, idle_s=2.0))
    assert sorted(s.id for s in nxt.scored) == sorted(s.id for s in second) and nxt.undecodable == []
    assert nxt.examples == [s.example for s in nxt.scored]
    for p, end in nxt.end_offsets.items():
        assert nxt.start_offsets[p] == batch.end_offsets.get(p, 0) and end > nxt.start_offsets[p]

    # max_records stops early and reports only what it returned; another group starts from the beginning.
    capped = asyncio.run(read_kept(settings, group + "-other", idle_s=2.0, max_records=4))
    assert capped.records_read == 4 and sum(e - capped.start_offsets[p] for p, e in capped.end_offsets.items()) == 4
