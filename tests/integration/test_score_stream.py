"""The scoring worker on the real broker: bad input is dead-lettered, repeats are not re-scored."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from settle.schemas.codecs import decode, encode
from settle.schemas.examples import DeadLetter
from settle.schemas.scored import ScoredExample
from settle.streams.kafka.io import read_topic
from settle.streams.settling.reference import settle_records
from settle.streams.local.processes import WorkerProcess
from settle.streams.settings import DEAD_LETTER, MODELS, SCORED, SETTLED, Settings
from settle.streams.simulate import SimulationConfig, simulate
from settle.streams.kafka.topics import ensure_topics_sync

pytestmark = [pytest.mark.broker, pytest.mark.slow]


async def _send(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(settings.topic(topic), key=key, value=value)
    finally:
        await producer.stop()


def test_scorer_dead_letters_bad_records_and_scores_each_example_once(
    settings: Settings, tmp_path: Path, student_dir: Path
) -> None:
    ensure_topics_sync(settings)
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=2, seed=9))]
    examples = [e for e in settle_records(enumerate(lines)).examples if e.original_text != e.settled_text][:3]
    assert examples
    good = [(e.id.encode(), encode(e)) for e in examples]
    asyncio.run(_send(settings, MODELS, [(b"student", b"{not a model message")]))
    asyncio.run(_send(settings, SETTLED, [good[0], (b"junk", b'{"v": 1, "id": 5}'), *good, good[0]]))

    scorer = WorkerProcess(
        settings, tmp_path / "scorer.log", command="scorer",
        extra_args=("--model", str(student_dir), "--k", "4", "--max-new-tokens", "8"),
    ).start()
    try:
        deadline = time.monotonic() + 120
        while True:
            assert scorer.alive, scorer.log_tail()
            scored = [decode(r.value, ScoredExample) for r in asyncio.run(read_topic(settings, SCORED, idle_s=1.0))]
            if {s.id for s in scored} >= {e.id for e in examples}:
                break
            assert time.monotonic() < deadline, scorer.log_tail()
            time.sleep(1.0)
        dead = [decode(r.value, DeadLetter) for r in asyncio.run(read_topic(settings, DEAD_LETTER, idle_s=1.5))]
    finally:
        scorer.stop()
    # the shared classifier's reasons: unreadable JSON on `models`, a readable object that is no example on `settled`
    assert sorted((d.agent, d.reason) for d in dead) == [("score", "invalid_settled"), ("score-models", "malformed")]
    assert {d.agent for d in dead} == {"score", "score-models"}
    assert all(d.value and d.error for d in dead)
    assert len(scored) == len(examples), "a repeated example was scored again"
    assert {s.model_version for s in scored} == {scored[0].model_version} and scored[0].model_version.startswith("sha-")
