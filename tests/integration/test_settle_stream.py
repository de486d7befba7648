"""The settle stream on the real embedded broker, with real worker processes.

Every test compares the `settled` topic with the offline reference on the same
records: the stream may only be slower, never different.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest

from settle.schemas.codecs import decode, decode_settled, encode
from settle.schemas.events import BufferEdited, PredictionRequested, Replacement, Span
from settle.schemas.examples import DeadLetter, SettledExample
from settle.streams.kafka.checkpoints import CheckpointStore
from settle.streams.kafka.io import Record, committed_offsets, produce_lines, read_topic
from settle.streams.settling import checkpoint
from settle.streams.settling.reference import settle_records
from settle.streams.local.processes import WorkerProcess
from settle.streams.settings import CHECKPOINTS, DEAD_LETTER, SETTLED, Settings
from settle.streams.settling.partition import PartitionSettler
from settle.streams.simulate import SimulationConfig, simulate
from settle.streams.kafka.topics import ensure_topics_sync

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _lines(sessions: int, seed: int) -> list[bytes]:
    return [encode(e) for e in simulate(SimulationConfig(sessions=sessions, seed=seed))]


def _reference(lines: list[bytes], settings: Settings) -> dict[str, SettledExample]:
    result = settle_records(enumerate(lines), settings.tracker)
    return {e.id: e for e in result.examples}


def _collect(
    settings: Settings, want: set[str], worker: WorkerProcess, timeout_s: float = 150.0
) -> list[Record]:
    """All `settled` records, polled until every wanted id is there (or time is up)."""
    deadline = time.monotonic() + timeout_s
    records: list[Record] = []
    while time.monotonic() < deadline:
        assert worker.alive, f"worker died:\n{worker.log_tail()}"
        records = asyncio.run(read_topic(settings, SETTLED, idle_s=1.5))
        if want <= {decode_settled(r.value).id for r in records}:
            break
        time.sleep(1.0)
    return records


def _assert_matches(records: list[Record], reference: dict[str, SettledExample]) -> None:
    by_id: dict[str, set[bytes]] = {}
    for r in records:
        by_id.setdefault(decode_settled(r.value).id, set()).add(r.value)
    assert set(by_id) == set(reference), (
        f"missing {sorted(set(reference) - set(by_id))[:5]}, extra {sorted(set(by_id) - set(reference))[:5]}"
    )
    for id_, values in by_id.items():
        assert len(values) == 1, f"{id_}: duplicates differ"  # repeats must be byte-identical
        assert decode_settled(next(iter(values))) == reference[id_]


def test_stream_equals_offline_reference_and_replays_identically(settings: Settings, tmp_path: Path) -> None:
    lines = _lines(sessions=12, seed=7)
    reference = _reference(lines, settings)
    assert len(reference) >= 20, "the simulation should settle a fair number of examples"
    ensure_topics_sync(settings)
    asyncio.run(produce_lines(settings, lines))

    worker = WorkerProcess(settings, tmp_path / "worker1.log").start()
    try:
        _assert_matches(_collect(settings, set(reference), worker), reference)
    finally:
        worker.stop()

    # Backfill: a new consumer group re-reads `edits` from the beginning into topics of its own.
    replay = replace(settings, group_prefix=settings.group_prefix + "-replay", output_prefix=settings.topic_prefix + "replay.")
    replay_out = replace(settings, topic_prefix=replay.output_prefix)
    worker = WorkerProcess(replay, tmp_path / "worker2.log").start()
    try:
        _assert_matches(_collect(replay_out, set(reference), worker), reference)
    finally:
        worker.stop()


@pytest.mark.parametrize("checkpoint_interval_s", [1.0, 0.0], ids=["checkpoints", "no-checkpoints"])
def test_sigkill_mid_run_loses_nothing(settings: Settings, tmp_path: Path, checkpoint_interval_s: float) -> None:
    """Kill the worker mid-stream, produce more while none runs, restart: nothing lost or invented.

    With checkpoints the commit point passes the open regions (they live in the
    checkpoint); without, open regions hold it back and are rebuilt by re-reading.
    """
    settings = replace(settings, checkpoint_interval_s=checkpoint_interval_s)
    lines = _lines(sessions=16, seed=11)
    reference = _reference(lines, settings)
    half = len(lines) // 2
    ensure_topics_sync(settings)
    asyncio.run(produce_lines(settings, lines[:half]))

    first = WorkerProcess(settings, tmp_path / "worker1.log").start()
    group = f"{settings.group_prefix}-settle"
    try:
        # Kill only once the worker has committed offsets for the whole first half:
        # a worker that committed past its open regions would now lose them.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            settled = asyncio.run(read_topic(settings, SETTLED, idle_s=0.5))
            committed = asyncio.run(committed_offsets(settings, group))
            if settled and sum(committed.values()) > 0:
                time.sleep(3.5)  # past faust's 2.8 s commit interval, with everything consumed
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"no settled output or commit before the kill:\n{first.log_tail()}")
    finally:
        first.kill()
    committed = asyncio.run(committed_offsets(settings, group))
    before_restart = asyncio.run(read_topic(settings, SETTLED, idle_s=0.5))
    assert 0 < len({decode_settled(r.value).id for r in before_restart}) < len(reference)
    if checkpoint_interval_s:
        assert sum(committed.values()) == half, "the commit point follows the checkpoints past open regions"
        state = asyncio.run(_open_regions_in_checkpoints(settings))
        assert state > 0, "regions were open at the kill: the restart must come from the checkpoint"
    else:
        assert 0 < sum(committed.values()) < half, "open regions must hold the commit back"

    asyncio.run(produce_lines(settings, lines[half:]))  # arrives while no worker runs
    second = WorkerProcess(settings, tmp_path / "worker2.log").start()
    try:
        _assert_matches(_collect(settings, set(reference), second, timeout_s=180), reference)
    finally:
        second.stop()


async def _open_regions_in_checkpoints(settings: Settings) -> int:
    store = CheckpointStore(settings)
    try:
        total = 0
        for p in range(settings.partitions):
            found = await store.read(p)
            if found is not None:
                total += sum(len(b.regions) for b in checkpoint.loads(found[1]).tracker.buffers)
        return total
    finally:
        await store.stop()


def _request(i: int, **overrides: object) -> PredictionRequested:
    fields = dict(
        time_ms=1_000 + i, session_id=f"s{i}", path="a.py", consent=True, encoding="utf-8",
        request_id=f"r{i}", region=Span(start=0, end=3), region_text="abc", cursor=1,
    )
    fields.update(overrides)
    return PredictionRequested(**fields)  # type: ignore[arg-type]


def test_bad_records_go_to_dead_letter_and_the_worker_keeps_going(settings: Settings, tmp_path: Path) -> None:
    good_before = _request(0)
    edit = BufferEdited(
        time_ms=2_000, session_id="s0", path="a.py", consent=True, encoding="utf-8",
        replacements=[Replacement(start=1, end=2, text="XY")],
    )
    bad = {
        "malformed": b'{"v": 1, "kind": "tick", ',
        "unsupported_version": b'{"v": 9, "kind": "buffer_edited", "session_id": "s0", "path": "a.py"}',
        "unknown_kind": b'{"v": 1, "kind": "cursor_moved", "time_ms": 5}',
        "invalid_event": b'{"v": 1, "kind": "buffer_edited", "time_ms": "soon", "session_id": "s0", "path": "a.py"}',
        "payload_too_large": encode(_request(1, region_text="x" * 300_000, region=Span(start=0, end=300_000))),
        # valid shape, impossible offsets: region of 3 units holding 2 units of text
        "text_length_mismatch": encode(_request(2, region=Span(start=5, end=8), region_text="ab", cursor=5)),
    }
    good_after = _request(3)
    # an edit splitting the 2-byte "é" of an open region is out of range too
    split = [
        encode(_request(4, region_text="aé", region=Span(start=0, end=3), cursor=0)),
        encode(BufferEdited(
            time_ms=1_010, session_id="s4", path="a.py", consent=True, encoding="utf-8",
            replacements=[Replacement(start=2, end=2, text="z")],
        )),
    ]
    final_tick = b'{"v": 1, "kind": "tick", "time_ms": 400000}'
    lines = [encode(good_before), encode(edit), *bad.values(), *split, encode(good_after), final_tick]
    reference = _reference(lines, settings)
    # s0's unreadable records (unsupported_version, invalid_event) and s4's splitting edit
    # were edits of open regions' buffers the tracker could not apply: r0 and r4 are
    # dropped (missed_edit), never emitted with text the editor may not have held.
    assert {e.request_id for e in reference.values()} == {"r3"}
    no_edit = settle_records(enumerate([encode(good_before), encode(edit), final_tick]), settings.tracker)
    assert [e.settled_text for e in no_edit.examples] == ["aXYc"]

    ensure_topics_sync(settings)
    asyncio.run(produce_lines(settings, lines))
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        _assert_matches(_collect(settings, set(reference), worker), reference)
        dead = asyncio.run(read_topic(settings, DEAD_LETTER, idle_s=1.5))
    finally:
        worker.stop()
    letters = [decode(r.value, DeadLetter) for r in dead]
    reasons = sorted(d.reason for d in letters)
    assert reasons == sorted([*bad, "splits_character"])
    for d in letters:
        assert d.source_topic == settings.topic("edits") and d.offset >= 0 and d.error
        assert d.value in lines  # the raw bytes, for replay after a fix
    assert settle_records(enumerate(lines), settings.tracker).tracker.stats.dropped_by_reason == {"missed_edit": 2}
    assert msgspec.json.decode(dead[0].value)["agent"] == "settle"


def test_live_ticks_settle_a_quiet_partition_and_metrics_are_served(settings: Settings, tmp_path: Path) -> None:
    """No event after the edit: only the worker's wall-clock ticks can settle the region."""
    import urllib.request

    from settle.streams.local.broker import free_port

    now = int(time.time() * 1000)
    live = replace(settings, quiescence_ms=1_000, lateness_ms=200, tick_interval_s=0.5)
    request = _request(0, time_ms=now)
    edit = BufferEdited(
        time_ms=now + 100, session_id="s0", path="a.py", consent=True, encoding="utf-8",
        replacements=[Replacement(start=3, end=3, text="!")],
    )
    ensure_topics_sync(live)
    asyncio.run(produce_lines(live, [encode(request), encode(edit)]))
    port = free_port()
    worker = WorkerProcess(live, tmp_path / "worker.log", extra_args=("--metrics-port", str(port))).start()
    try:
        deadline = time.monotonic() + 60
        settled: list[Record] = []
        while not settled:
            assert time.monotonic() < deadline and worker.alive, worker.log_tail()
            settled = asyncio.run(read_topic(live, SETTLED, idle_s=0.5))
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        worker.stop()
    (record,) = settled
    example = decode_settled(record.value)
    assert example.settled_text == "abc!" and example.settled_at_ms == now + 100 + 1_000
    assert 'settle_outputs_total{topic="settled"} 1.0' in metrics


def test_rebalancing_between_two_workers_loses_nothing(settings: Settings, tmp_path: Path) -> None:
    """A second worker joins mid-stream (partitions move), then the first is killed (they move back)."""
    lines = _lines(sessions=16, seed=13)
    reference = _reference(lines, settings)
    third = len(lines) // 3
    ensure_topics_sync(settings)
    asyncio.run(produce_lines(settings, lines[:third]))
    a = WorkerProcess(settings, tmp_path / "a.log").start()
    b = WorkerProcess(settings, tmp_path / "b.log")
    try:
        deadline = time.monotonic() + 90
        while not asyncio.run(read_topic(settings, SETTLED, idle_s=0.5)):  # a is running and settling
            assert time.monotonic() < deadline and a.alive, a.log_tail()
        b.start()
        asyncio.run(produce_lines(settings, lines[third : 2 * third]))
        time.sleep(8)  # b joins; partitions are split between the two
        a.kill()
        asyncio.run(produce_lines(settings, lines[2 * third :]))
        _assert_matches(_collect(settings, set(reference), b, timeout_s=180), reference)
    finally:
        a.kill()
        b.stop()


def _trust_lines() -> list[bytes]:
    """Issue 9's first input: another client's fast clock, then r edited in b.py."""
    def ev(**f: object) -> bytes:
        return msgspec.json.encode({"consent": True, "encoding": "utf-16", "session_id": "s", "path": "b.py", **f})

    return [
        ev(kind="buffer_edited", time_ms=100_000, session_id="fast", path="f.py",
           replacements=[{"start": 0, "end": 0, "text": "x"}]),
        ev(kind="prediction_requested", time_ms=1_000, request_id="r", region={"start": 0, "end": 1},
           region_text="a", cursor=0),
        ev(kind="buffer_edited", time_ms=1_500, replacements=[{"start": 0, "end": 1, "text": "b"}]),
        msgspec.json.encode({"kind": "tick", "time_ms": 20_000}),
    ]


@pytest.mark.parametrize("record_time", [False, True])
def test_a_fast_client_decides_nothing_on_the_stream(settings: Settings, tmp_path: Path, record_time: bool) -> None:
    """Ticks alone, or record timestamps set at ingest: r settles as "b" either way, as the reference says."""
    s = replace(settings, record_time=record_time)
    lines = _trust_lines()
    reference = _reference(lines, s)
    assert [(e.settled_text, e.settled_at_ms) for e in reference.values()] == [("b", 11_500)]
    ensure_topics_sync(s)
    now = int(time.time() * 1000)
    # Stamped as an ingest endpoint would: arrival order, the tick 20 s later (its own time_ms
    # is a worker's clock, which under record_time counts for nothing).
    stamps = [now, now + 1, now + 2, now + 20_000] if record_time else None
    asyncio.run(produce_lines(s, lines, timestamps=stamps))
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        _assert_matches(_collect(s, set(reference), worker, timeout_s=90), reference)
    finally:
        worker.stop()


def test_a_checkpoint_ahead_of_the_commit_is_restored_and_what_it_covers_is_skipped(
        settings: Settings, tmp_path: Path) -> None:
    """A crash after the checkpoint's pointer moved but before the `edits` commit.

    The worker finds the committed offset at 0 and a checkpoint at k: it must
    restore the state (regions open at k included) and skip records 0..k-1, so
    the examples those records settled are not emitted again and every later
    one is, equal to the offline reference.
    """
    settings = replace(settings, partitions=1, checkpoint_interval_s=1.0)
    lines = _lines(sessions=12, seed=5)
    reference = _reference(lines, settings)
    k = len(lines) // 2
    settler = PartitionSettler(0, settings.tracker, source_topic=settings.topic("edits"),
                               record_time=settings.record_time, safety_policy=settings.safety)
    early: set[str] = set()
    for i in range(k):
        early |= {o.key.decode() for o in settler.handle(i, None, lines[i]) if o.topic == SETTLED and o.key}
    assert early and settler.tracker.open_regions() > 0
    ensure_topics_sync(settings)
    ensure_topics_sync(settings, (CHECKPOINTS,))
    asyncio.run(produce_lines(settings, lines))

    async def plant() -> None:
        store = CheckpointStore(settings)
        try:
            await store.write(0, k, settler.checkpoint())
        finally:
            await store.stop()

    asyncio.run(plant())
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        want = set(reference) - early
        records = _collect(settings, want, worker, timeout_s=120)
        time.sleep(2.0)
        records = asyncio.run(read_topic(settings, SETTLED, idle_s=1.0))
    finally:
        worker.stop()
    got = {decode_settled(r.value).id for r in records}
    assert got == want, f"re-emitted {sorted(got & early)[:3]}, missing {sorted(want - got)[:3]}"
    _assert_matches(records, {i: reference[i] for i in want})
