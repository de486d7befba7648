"""Issue 9's inputs, as regression tests: never emit a settled text nobody wrote.

Each runs the raw records through the offline reference (what `settle reference`
prints) or through PartitionSettler (what the stream produces), with the values
the issue names as right.
"""

from __future__ import annotations

import json

import pytest

from settle.schemas.codecs import decode_dead_letter, decode_event, decode_settled
from settle.schemas.examples import SettledExample
from settle.streams.settling.partition import PartitionSettler
from settle.streams.settling.reference import settle_records
from settle.streams.settling.tracker import Tracker, TrackerConfig


def line(**fields: object) -> bytes:
    return json.dumps({"consent": True, "encoding": "utf-16", **fields}).encode()


def request(t: int, rid: str, start: int, text: str, *, sid: str = "s", path: str = "b.py") -> bytes:
    return line(kind="prediction_requested", time_ms=t, session_id=sid, path=path, request_id=rid,
                region={"start": start, "end": start + len(text.encode("utf-16-le")) // 2},
                region_text=text, cursor=start)


def edit(t: int, start: int, end: int, text: str, *, sid: str = "s", path: str = "b.py") -> bytes:
    return line(kind="buffer_edited", time_ms=t, session_id=sid, path=path,
                replacements=[{"start": start, "end": end, "text": text}])


def tick(t: int) -> bytes:
    return json.dumps({"kind": "tick", "time_ms": t}).encode()


def settled(lines: list[bytes], config: TrackerConfig = TrackerConfig(), flush: bool = True) -> list[tuple[str, str, int]]:
    result = settle_records(enumerate(lines), config, flush=flush)
    return [(e.request_id, e.settled_text, e.settled_at_ms) for e in result.examples]


FAST = edit(100_000, 0, 0, "x", sid="fast", path="f.py")
R, E = request(1_000, "r", 0, "a"), edit(1_500, 0, 1, "b")


# -- 1. one client's clock must not decide another client's data ----------------


@pytest.mark.parametrize("order", [[FAST, R, E], [R, FAST, E], [R, E, FAST]])
def test_a_fast_client_decides_nothing_for_others(order: list[bytes]) -> None:
    assert settled(order) == [("r", "b", 11_500)]
    result = settle_records(enumerate(order), flush=True)
    assert result.tracker.stats.late_events == 0


def test_fast_clock_request_cannot_hold_its_regions_past_the_skew_bound() -> None:
    # A client 1 h ahead of the ticks: believed at most max_skew_ms ahead, and counted.
    cfg = TrackerConfig(max_skew_ms=5_000)
    lines = [tick(1_000), request(3_601_000, "r", 0, "a"), tick(1_000 + 5_000 + 12_000)]
    result = settle_records(enumerate(lines), cfg)
    assert [e.settled_text for e in result.examples] == ["a"]
    assert result.tracker.stats.skewed_events == 1


def test_late_batch_upload_settles_with_its_edits() -> None:
    # The whole session reaches the partition a minute late, after ticks and
    # other buffers moved on: its clock is aligned to its arrival (61_000), so its
    # last edit's remaining quiet period (10 s) plus lateness runs from there.
    session = [request(1_000, "r", 0, "a"), edit(1_500, 0, 1, "b"), edit(9_000, 1, 1, "c")]
    others = [request(t, f"o{t}", 0, "z", sid="o") for t in range(1_000, 60_000, 7_000)]
    lines = [tick(30_000), *others, tick(61_000), *session, tick(61_500), tick(61_000 + 12_000 - 1)]
    assert ("r", "bc", 19_000) not in settled(lines, flush=False)
    assert ("r", "bc", 19_000) in settled([*lines, tick(61_000 + 12_000)], flush=False)
    assert settle_records(enumerate(lines)).tracker.stats.late_events == 0


def test_result_does_not_depend_on_which_buffers_share_the_partition() -> None:
    alone = settled([tick(0), R, E, tick(20_000)], flush=False)
    shared = settled([tick(0), R, FAST, request(200_000, "q", 0, "z", sid="g"), E, tick(20_000)], flush=False)
    assert alone == [("r", "b", 11_500)] and ("r", "b", 11_500) in shared


def test_a_fast_worker_tick_is_harmless_when_the_broker_stamps_records() -> None:
    # record_time: the partition clock is the record timestamp, so a tick's own
    # time_ms (a worker's clock) moves nothing.
    settler = PartitionSettler(0, record_time=True)
    stamped = [(R, 50_000), (tick(10_000_000), 50_100), (E, 50_200), (tick(0), 50_200 + 12_000)]
    outs = [o for i, (v, ts) in enumerate(stamped) for o in settler.handle(i, None, v, ts)]
    got = [decode_settled(o.value) for o in outs if o.topic == "settled"]
    assert [(e.settled_text, e.settled_at_ms) for e in got] == [("b", 11_500)]


def test_edits_later_than_the_lateness_bound_are_late_or_dropped_never_wrong_under_drop() -> None:
    late = [tick(0), R, tick(1_000 + 12_000), E, tick(40_000)]
    assert settled(late) == [("r", "a", 11_000)]  # decided by the partition clock, then...
    result = settle_records(enumerate(late), flush=True)
    assert result.tracker.stats.late_events == 1  # ...the late edit is counted
    strict = settle_records(enumerate(late), TrackerConfig(unconfirmed="drop"), flush=True)
    assert strict.examples == [] and strict.tracker.stats.dropped_by_reason == {"unconfirmed": 1}
    # Its own later event proves the quiet period: confirmed, emitted under either policy.
    proved = [tick(0), R, E, edit(11_500, 5, 5, "z"), tick(40_000)]
    assert settled(proved, TrackerConfig(unconfirmed="drop")) == [("r", "b", 11_500)]


# -- 2. a redelivered request makes no second example ---------------------------


def test_redelivered_request_is_ignored() -> None:
    lines = [R, E, tick(20_000), R, tick(40_000)]
    result = settle_records(enumerate(lines), flush=True)
    assert [(e.request_id, e.settled_text) for e in result.examples] == [("r", "b")]
    assert result.tracker.stats.ignored_by_reason == {"redelivered_request": 1}
    # while still open, too
    assert settled([R, E, R, tick(40_000)]) == [("r", "b", 11_500)]


def test_request_memory_is_bounded() -> None:
    cfg = TrackerConfig(max_idle_buffers=2, max_request_ids=3)
    tr = Tracker(cfg)
    for i in range(50):
        lines = [request(i * 100_000, f"r{j}", 0, "a", sid=f"s{i}") for j in range(5)]
        for raw in lines:
            tr.process(decode_event(raw))
        tr.flush()
    assert tr.remembered_buffers() <= 2 and tr.stats.buffers_forgotten == 48
    assert all(len(b.seen) <= 3 for b in tr._buffers.values())


# -- 3. a rejected edit leaves no stale region behind ----------------------------


def test_rejected_huge_edit_drops_the_region() -> None:
    lines = [request(1_000, "r", 1, "b"), edit(2_000, 0, 0, "x" * 270_000), edit(3_000, 0, 270_000, ""), tick(30_000)]
    result = settle_records(enumerate(lines), flush=True)
    assert result.examples == []
    assert [reason for _, reason, _ in result.invalid] == ["payload_too_large"]
    assert result.tracker.stats.dropped_by_reason == {"missed_edit": 1}
    # the stream: dead letter, then nothing settled
    settler = PartitionSettler(0)
    outs = [o for i, v in enumerate(lines) for o in settler.handle(i, b"s\x1fb.py", v)]
    assert [o.topic for o in outs] == ["dead-letter"]
    assert decode_dead_letter(outs[0].value).reason == "payload_too_large"
    assert settler.dropped == {"missed_edit": 1}


def test_edit_splitting_a_surrogate_pair_drops_the_region() -> None:
    lines = [request(1_000, "r", 0, "a😀b"), edit(2_000, 2, 2, "x"), edit(3_000, 0, 1, ""), tick(30_000)]
    result = settle_records(enumerate(lines), flush=True)
    assert result.examples == [] and [r for _, r, _ in result.invalid] == ["splits_character"]
    # a new request re-anchors the buffer
    again = [*lines, request(40_000, "r2", 0, "😀b"), tick(80_000)]
    assert settled(again) == [("r2", "😀b", 50_000)]


# -- 4. a request from a stale snapshot is not believed --------------------------


def test_stale_snapshot_request_is_dropped_with_what_it_contradicts() -> None:
    lines = [request(1_000, "r1", 0, "a"), edit(2_000, 0, 1, "b"), request(2_100, "r2", 0, "a"), tick(40_000)]
    result = settle_records(enumerate(lines), flush=True)
    assert result.examples == []
    assert result.tracker.stats.dropped_by_reason == {"contradicted": 2}
    # agreeing with the tracked text (overlapping in part) is fine
    ok = [request(1_000, "r1", 0, "ab"), edit(2_000, 0, 1, "b"), request(2_100, "r2", 1, "bc"), tick(40_000)]
    assert sorted(settled(ok)) == [("r1", "bb", 12_000), ("r2", "bc", 12_100)]


def test_non_overlapping_requests_are_not_compared() -> None:
    lines = [request(1_000, "r1", 0, "a"), request(1_100, "r2", 5, "zzz"), tick(40_000)]
    assert sorted(settled(lines)) == [("r1", "a", 11_000), ("r2", "zzz", 11_100)]


# -- boundary rule -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "reps", "want"),
    [
        ("absorb", [(5, 5, "<")], "<abc"),
        ("absorb", [(8, 8, ">")], "abc>"),
        ("absorb", [(3, 5, "")], "abc"),
        ("exclusive", [(5, 5, "<")], "abc"),
        ("exclusive", [(8, 8, ">")], "abc"),
        ("exclusive", [(3, 5, "Z")], "abc"),
        ("exclusive", [(4, 6, "Z")], "Zbc"),
        ("exclusive", [(7, 9, "Z")], "abZ"),
        ("exclusive", [(0, 0, "xx"), (7, 7, "<"), (11, 11, ">")], "abc"),
    ],
)
def test_boundary_rule(rule: str, reps: list[tuple[int, int, str]], want: str) -> None:
    tr = Tracker(TrackerConfig(boundary=rule))  # type: ignore[arg-type]
    tr.process(decode_event(request(0, "r", 5, "abc")))
    raw = line(kind="buffer_edited", time_ms=1, session_id="s", path="b.py",
               replacements=[{"start": s, "end": e, "text": x} for s, e, x in reps])
    tr.process(decode_event(raw))
    out = tr.flush()
    assert isinstance(out[0], SettledExample) and out[0].settled_text == want


@pytest.mark.parametrize("rule", ["absorb", "exclusive"])
def test_empty_region_takes_an_insertion_at_its_point_under_both_rules(rule: str) -> None:
    lines = [request(0, "r", 3, ""), edit(1, 3, 3, "xy"), edit(2, 0, 1, ""), edit(3, 4, 6, "")]
    got = settled(lines, TrackerConfig(boundary=rule))  # type: ignore[arg-type]
    # exclusive: the deletion starting at the (moved) empty region's end stays outside
    assert got == [("r", "xy", 10_001 if rule == "exclusive" else 10_003)] or rule == "absorb"
