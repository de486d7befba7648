"""`settle replay` on the real embedded broker against a live run of real worker processes.

A live settle worker and a live scorer process a simulated span; then `settle
replay` re-settles and re-scores it under a new prefix: `settled`, `scored` and
`kept` must be byte-identical. A partial span (per-partition offsets) must give
exactly the live examples whose regions were born in it (the boundary rule),
and a re-score with a second model version must equal the offline scorer.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from settle.schemas.codecs import decode, decode_settled, encode
from settle.schemas.events import Tick
from settle.schemas.scored import ScoredExample
from settle.streams.kafka.io import committed_offsets, key_of, read_topic
from settle.streams.kafka.replay import Span, replay_edits, replay_settled
from settle.streams.kafka.topics import ensure_topics_sync
from settle.streams.local.processes import WorkerProcess, settings_env
from settle.streams.settings import EDITS, KEPT, MODELS, SCORED, SETTLED, Settings
from settle.streams.settling.reference import settle_records
from settle.streams.settling.span import birth_id
from settle.streams.simulate import SimulationConfig, simulate

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SCORE_ARGS = ("--k", "2", "--round-size", "2", "--max-new-tokens", "32", "--mode", "median",
              "--keep-min", "0.5", "--keep-max", "3.0", "--no-adaptive")


async def produce_stamped(settings: Settings, lines: list[bytes], times: list[int]) -> None:
    """Like `settle produce`, with each record's Kafka timestamp set to its event time."""
    name = settings.topic(EDITS)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(name))
        futs = []
        for raw, t in zip(lines, times):
            key, is_tick = key_of(raw)
            for p in (partitions if is_tick else [None]):
                futs.append(await producer.send(name, value=raw, key=key, partition=p, timestamp_ms=t))
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def _publish(settings: Settings, message) -> None:  # type: ignore[no-untyped-def]
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(MODELS), key=message.name.encode(), value=encode(message))
    finally:
        await producer.stop()


def _by_id(records: list, decoder) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    out: dict[str, set[bytes]] = {}
    for r in records:
        out.setdefault(decoder(r.value).id, set()).add(r.value)
    assert all(len(v) == 1 for v in out.values()), "repeats of one id must be byte-identical"
    return {k: next(iter(v)) for k, v in out.items()}


def _wait_for(settings: Settings, topic: str, want: int, workers: list[WorkerProcess], timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while True:
        for w in workers:
            assert w.alive, w.log_tail()
        records = asyncio.run(read_topic(settings, topic, idle_s=1.0))
        if len({r.value for r in records}) >= want or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(settings)}
    return subprocess.run([sys.executable, "-m", "settle.streams.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def live_settings(broker, tmp_path_factory: pytest.TempPathFactory) -> Settings:  # type: ignore[no-untyped-def]
    """Topics and groups of this module's own: one live run serves every test here."""
    n = f"{os.getpid()}-replay"
    return Settings(bootstrap=broker.bootstrap, topic_prefix=f"t{n}.", group_prefix=f"g{n}",
                    data_dir=tmp_path_factory.mktemp("worker"), partitions=4)


@pytest.fixture
def settings(live_settings: Settings) -> Settings:
    return live_settings


@pytest.fixture(scope="module")
def live_run(live_settings: Settings, tmp_path_factory: pytest.TempPathFactory, bootstrapped_student: Path):  # type: ignore[no-untyped-def]
    """A live settle worker and scorer over a simulated span; yields what they wrote."""
    settings, tmp_path = live_settings, tmp_path_factory.mktemp("live")
    events = simulate(SimulationConfig(sessions=4, seed=21))
    lines = [encode(e) for e in events]
    times = [e.time_ms for e in events]
    reference = {e.id: e for e in settle_records(enumerate(lines), settings.tracker).examples}
    assert len(reference) >= 10
    ensure_topics_sync(settings)
    asyncio.run(produce_stamped(settings, lines, times))
    settle = WorkerProcess(settings, tmp_path / "settle.log").start()
    scorer = WorkerProcess(settings, tmp_path / "scorer.log", command="scorer",
                           extra_args=("--model", str(bootstrapped_student), *SCORE_ARGS)).start()
    try:
        settled = _by_id(_wait_for(settings, SETTLED, len(reference), [settle, scorer]), decode_settled)
        assert set(settled) == set(reference)
        scored = _by_id(_wait_for(settings, SCORED, len(reference), [settle, scorer]),
                        lambda v: decode(v, ScoredExample))
        kept = _by_id(asyncio.run(read_topic(settings, KEPT, idle_s=1.0)), lambda v: decode(v, ScoredExample))
    finally:
        settle.stop()
        scorer.stop()
    assert set(scored) == set(reference)
    return settled, scored, kept


def test_replay_of_a_live_span_is_byte_identical(settings: Settings, live_run, bootstrapped_student: Path) -> None:  # type: ignore[no-untyped-def]
    settled, scored, kept = live_run
    assert kept and len(kept) < len(scored), "the band should keep some and drop some"
    live_group = f"{settings.group_prefix}-settle"
    committed_before = asyncio.run(committed_offsets(settings, live_group))

    out = "replayed."
    r1 = _cli(settings, "replay", "edits", "--output-prefix", settings.topic_prefix + out, "--no-progress",
              "--idle", "1")
    assert r1.returncode == 0, r1.stderr
    assert "in the span" in r1.stderr
    r2 = _cli(settings, "replay", "settled", "--output-prefix", settings.topic_prefix + out, "--no-progress",
              "--idle", "1", "--model", str(bootstrapped_student), *SCORE_ARGS)
    assert r2.returncode == 0, r2.stderr

    new = replace(settings, topic_prefix=settings.topic_prefix + out)
    assert _by_id(asyncio.run(read_topic(new, SETTLED, idle_s=1.0)), decode_settled) == settled
    assert _by_id(asyncio.run(read_topic(new, SCORED, idle_s=1.0)), lambda v: decode(v, ScoredExample)) == scored
    assert _by_id(asyncio.run(read_topic(new, KEPT, idle_s=1.0)), lambda v: decode(v, ScoredExample)) == kept
    # The live group's offsets are untouched; the replay's group is its own.
    assert asyncio.run(committed_offsets(settings, live_group)) == committed_before
    assert sum(asyncio.run(committed_offsets(settings, f"{settings.group_prefix}-replay-edits")).values()) > 0


def test_partial_span_emits_exactly_the_regions_born_in_it(settings: Settings, live_run) -> None:  # type: ignore[no-untyped-def]
    settled, _, _ = live_run
    edits = asyncio.run(read_topic(settings, EDITS, idle_s=1.0))
    by_partition: dict[int, list] = {}
    for r in edits:
        by_partition.setdefault(r.partition, []).append(r)
    lo = {p: rs[len(rs) // 3].offset for p, rs in by_partition.items()}
    hi = {p: rs[2 * len(rs) // 3].offset for p, rs in by_partition.items()}
    born_in = {birth_id(r.value) for r in edits if lo[r.partition] <= r.offset < hi[r.partition]} - {None}
    expected = {i: v for i, v in settled.items() if i in born_in}
    assert 0 < len(expected) < len(settled)

    new = replace(settings, topic_prefix=settings.topic_prefix + "part.")
    report = asyncio.run(replay_edits(settings, new.topic_prefix, Span(from_offsets=lo, to_offsets=hi), idle_s=1.0))
    got = _by_id(asyncio.run(read_topic(new, SETTLED, idle_s=1.0)), decode_settled)
    assert got == expected
    assert report.suppressed > 0 and any(p.warm < p.start for p in report.plans)

    # The same span by record timestamps (event times here): the first and last third of event time.
    times = sorted(decode_settled(v).requested_at_ms for v in settled.values())
    t0, t1 = times[len(times) // 3], times[2 * len(times) // 3]
    new2 = replace(settings, topic_prefix=settings.topic_prefix + "timed.")
    asyncio.run(replay_edits(settings, new2.topic_prefix, Span(from_ms=t0, to_ms=t1), idle_s=1.0))
    got2 = _by_id(asyncio.run(read_topic(new2, SETTLED, idle_s=1.0)), decode_settled)
    assert got2 and set(got2) < set(settled)
    assert all(settled[i] == v for i, v in got2.items()), "a replayed region differs from the live run"
    assert all(t0 <= decode_settled(v).requested_at_ms < t1 for v in got2.values())


def test_rescore_with_a_second_model_version_equals_the_offline_scorer(
    settings: Settings, live_run, bootstrapped_student: Path, student_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    from settle.streams.runtime.student import OnnxStudent
    from settle.streams.scoring.score import ScoringConfig, score_batch
    from settle.schemas.scored import BandPolicy
    from settle.streams.contracts.sampling import SamplingConfig

    settled, scored, _ = live_run
    v1, v2 = OnnxStudent(bootstrapped_student), OnnxStudent(student_dir)
    assert v1.model_version != v2.model_version
    config = ScoringConfig(policy=BandPolicy(mode="median", k=2, round_size=2, keep_min_median=0.5,
                                             keep_max_median=3.0),
                           sampling=SamplingConfig(max_new_tokens=32), adaptive=False)
    new = replace(settings, topic_prefix=settings.topic_prefix + "v2.")
    report = asyncio.run(replay_settled(settings, new.topic_prefix, v2, config, idle_s=1.0))
    assert report.emitted[SCORED] == len(settled)
    got = _by_id(asyncio.run(read_topic(new, SCORED, idle_s=1.0)), lambda v: decode(v, ScoredExample))
    examples = [decode_settled(v) for v in settled.values()]
    offline = {s.id: encode(s) for s in score_batch(examples, v2, config)}
    assert got == offline
    assert {decode(v, ScoredExample).model_version for v in got.values()} == {v2.model_version}
    assert all(decode(v, ScoredExample).model_version == v1.model_version for v in scored.values())
    kept = _by_id(asyncio.run(read_topic(new, KEPT, idle_s=1.0)), lambda v: decode(v, ScoredExample))
    assert set(kept) == {i for i, v in offline.items() if decode(v, ScoredExample).decision.decision == "keep"}

    # The usual backfill after a publish: name the version on `models`, not a directory.
    from settle.schemas.models import ModelPublished

    asyncio.run(_publish(settings, ModelPublished(name="student", version="v0002", status="published",
                                                  location=str(student_dir), created_at_ms=1)))
    r = _cli(settings, "replay", "settled", "-o", settings.topic_prefix + "v2cli.", "--version", "v0002",
             "--no-progress", "--idle", "1", "--k", "2", "--round-size", "2", "--max-new-tokens", "32",
             "--mode", "median", "--keep-min", "0.5", "--keep-max", "3.0", "--no-adaptive")
    assert r.returncode == 0, r.stderr
    cli = replace(settings, topic_prefix=settings.topic_prefix + "v2cli.")
    assert _by_id(asyncio.run(read_topic(cli, SCORED, idle_s=1.0)), lambda v: decode(v, ScoredExample)) == offline
    r = _cli(settings, "replay", "settled", "-o", settings.topic_prefix + "v9.", "--version", "v0009", "--no-progress")
    assert r.returncode == 2 and "no published student v0009" in r.stderr
