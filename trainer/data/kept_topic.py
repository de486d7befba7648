"""Read and commit `kept` with the trainer's own consumer group: the trainer's only Kafka code.

Its own module so that the rest of ``trainer/data`` stays pure (no aiokafka import anywhere else
in it). Reading is at-least-once and commit-after-success: :func:`read_kept` consumes `kept` from
the group's committed offsets and never commits; :func:`commit_kept` commits the offsets a batch
reports, and the trainer calls it only after a run succeeded, so a crashed run reads the same
records again next time. Nothing is dropped without a count: undecodable records come back with
partition, offset and a reason, and are committed past like the rest (they would never decode on
a re-read either).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from settle.schemas.examples import SettledExample
from settle.schemas.scored import ScoredExample
from settle.streams.kafka.io import topic_partitions
from settle.streams.kafka.security import client_kwargs
from settle.streams.settings import KEPT, Settings
from settle.trainer.data.records import InvalidTrainingRecord, decode_kept

__all__ = ["KeptBatch", "UndecodableRecord", "commit_kept", "read_kept", "trainer_group_id"]


@dataclass(frozen=True)
class UndecodableRecord:
    partition: int
    offset: int
    key: bytes | None
    reason: str
    error: str
    value: bytes = b""


@dataclass
class KeptBatch:
    """What one :func:`read_kept` saw. Commit ``end_offsets`` only after training succeeded."""

    topic: str
    group_id: str
    #: decoded records in the order read: offset order within a partition (repeats included)
    scored: list[ScoredExample] = field(default_factory=list)
    undecodable: list[UndecodableRecord] = field(default_factory=list)
    #: {partition: first offset this read started from} for every partition of the topic
    start_offsets: dict[int, int] = field(default_factory=dict)
    #: {partition: offset after the last record read}, only partitions with records read
    end_offsets: dict[int, int] = field(default_factory=dict)

    @property
    def examples(self) -> list[SettledExample]:
        return [s.example for s in self.scored]

    @property
    def records_read(self) -> int:
        return len(self.scored) + len(self.undecodable)

    @property
    def undecodable_by_reason(self) -> dict[str, int]:
        return dict(Counter(u.reason for u in self.undecodable))


def trainer_group_id(settings: Settings, name: str = "trainer") -> str:
    """The trainer's consumer group, beside the stream's (``<group_prefix>-trainer``)."""
    return f"{settings.group_prefix}-{name}"


async def read_kept(
    settings: Settings,
    group_id: str,
    *,
    idle_s: float = 3.0,
    max_records: int | None = None,
    max_s: float = 600.0,
) -> KeptBatch:
    """Read `kept` from ``group_id``'s committed offsets (earliest where none) until idle.

    "Until idle" = no record for ``idle_s`` seconds (the embedded broker's end
    offsets are not trusted, see ``settle.streams.kafka.io``), or ``max_records``
    records, or ``max_s`` seconds. Partitions are assigned manually (no group
    join, no rebalance); the group is used for its committed offsets only, and
    nothing is committed here: see :func:`commit_kept`.
    """
    name = settings.topic(KEPT)
    batch = KeptBatch(topic=name, group_id=group_id)
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
        tps = [TopicPartition(name, p) for p in await topic_partitions(consumer, name)]
        consumer.assign(tps)
        for tp in tps:
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
            batch.start_offsets[tp.partition] = await consumer.position(tp)
        started = last = time.monotonic()
        while True:
            now = time.monotonic()
            left = None if max_records is None else max_records - batch.records_read
            if now - last > idle_s or now - started > max_s or (left is not None and left <= 0):
                break
            got = await consumer.getmany(timeout_ms=200, max_records=left or 5000)
            for tp in sorted(got, key=lambda t: t.partition):
                for m in got[tp]:
                    last = time.monotonic()
                    try:
                        batch.scored.append(decode_kept(m.value))
                    except InvalidTrainingRecord as exc:
                        batch.undecodable.append(
                            UndecodableRecord(tp.partition, m.offset, m.key, exc.reason, exc.message, m.value or b"")
                        )
                    batch.end_offsets[tp.partition] = m.offset + 1
    finally:
        await consumer.stop()
    return batch


async def commit_kept(settings: Settings, group_id: str, offsets: Mapping[int, int]) -> None:
    """Commit ``{partition: next_offset}`` on `kept` for ``group_id`` (e.g. ``batch.end_offsets``)."""
    if not offsets:
        return
    if any(o < 0 for o in offsets.values()):
        raise ValueError(f"negative offset in {dict(offsets)}")
    name = settings.topic(KEPT)
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=group_id, enable_auto_commit=False)
    try:
        await consumer.start()
        tps = {TopicPartition(name, p): o for p, o in sorted(offsets.items())}
        consumer.assign(list(tps))
        await consumer.commit(tps)
    finally:
        await consumer.stop()
