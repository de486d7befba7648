"""Region tracker: exact unit cases, then properties against a reference model.

The reference model keeps the FULL buffer text and cuts each region out of it;
the tracker never sees text outside a region, so agreement shows the splicing
rule equals cutting. A second property runs the same stream through one
tracker and through 2-4 partition trackers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settle.schemas.events import (
    BufferEdited,
    PredictionRequested,
    PromptContext,
    Replacement,
    Span,
    Tick,
)
from settle.schemas.examples import SettledExample
from settle.streams.settling.offsets import units_len
from settle.streams.settling.tracker import (
    Dropped,
    InvalidEvent,
    Outcome,
    Tracker,
    TrackerConfig,
    region_id,
    settle_all,
)

SID, PATH = "s1", "src/a.py"
Q, L = 10_000, 2_000


def req(
    t: int,
    start: int,
    text: str,
    cursor: int | None = None,
    *,
    rid: str = "r1",
    enc: str = "utf-32",
    sid: str = SID,
    path: str = PATH,
    consent: bool = True,
    end: int | None = None,
) -> PredictionRequested:
    if end is None:
        end = start + units_len(text, enc)  # type: ignore[arg-type]
    return PredictionRequested(
        time_ms=t,
        session_id=sid,
        path=path,
        consent=consent,
        encoding=enc,  # type: ignore[arg-type]
        request_id=rid,
        region=Span(start=start, end=end),
        region_text=text,
        cursor=start if cursor is None else cursor,
    )


def edit(
    t: int,
    *reps: tuple[int, int, str],
    enc: str = "utf-32",
    sid: str = SID,
    path: str = PATH,
    origin: str = "typed",
    consent: bool = True,
) -> BufferEdited:
    return BufferEdited(
        time_ms=t,
        session_id=sid,
        path=path,
        consent=consent,
        encoding=enc,  # type: ignore[arg-type]
        origin=origin,  # type: ignore[arg-type]
        replacements=[Replacement(start=s, end=e, text=x) for s, e, x in reps],
    )


def opened(start: int = 10, text: str = "hello", **kw: object) -> Tracker:
    tr = Tracker()
    assert tr.process(req(0, start, text, **kw)) == []  # type: ignore[arg-type]
    return tr


def only_settled(outcomes: list[Outcome]) -> SettledExample:
    assert len(outcomes) == 1 and isinstance(outcomes[0], SettledExample), outcomes
    return outcomes[0]


# -- movement: exact values -------------------------------------------------


def test_edit_strictly_before_shifts() -> None:
    tr = opened()
    tr.process(edit(1, (2, 4, "xyz")))  # delta +1
    assert tr.peek(SID, PATH, "r1") == (11, 16, "hello")
    tr.process(edit(2, (0, 5, "")))  # e=5 < a=11, delta -5
    assert tr.peek(SID, PATH, "r1") == (6, 11, "hello")
    ex = only_settled(tr.flush())
    assert ex.edit_count == 0 and ex.settled_at_ms == Q  # shifts do not reset the timer


def test_edit_strictly_after_is_ignored() -> None:
    tr = opened()
    tr.process(edit(1, (16, 18, "abc")))
    assert tr.peek(SID, PATH, "r1") == (10, 15, "hello")


def test_overlap_left() -> None:
    tr = opened()
    tr.process(edit(1, (8, 12, "AB")))  # delta -2
    assert tr.peek(SID, PATH, "r1") == (8, 13, "ABllo")


def test_overlap_right() -> None:
    tr = opened()
    tr.process(edit(1, (13, 18, "Z")))  # delta -4
    assert tr.peek(SID, PATH, "r1") == (10, 14, "helZ")


def test_edit_inside_region() -> None:
    tr = opened()
    tr.process(edit(1, (11, 13, "EY")))
    assert tr.peek(SID, PATH, "r1") == (10, 15, "hEYlo")
    tr.process(edit(2, (11, 13, "")))
    assert tr.peek(SID, PATH, "r1") == (10, 13, "hlo")


def test_edit_containing_region() -> None:
    tr = opened()
    tr.process(edit(1, (5, 20, "new")))  # delta -12
    assert tr.peek(SID, PATH, "r1") == (5, 8, "new")


def test_insertion_at_both_boundaries_is_absorbed() -> None:
    tr = opened()
    tr.process(edit(1, (10, 10, "<<")))
    assert tr.peek(SID, PATH, "r1") == (10, 17, "<<hello")
    tr.process(edit(2, (17, 17, ">>")))
    assert tr.peek(SID, PATH, "r1") == (10, 19, "<<hello>>")


def test_touching_deletions_count_as_overlap() -> None:
    tr = opened()
    tr.process(edit(1, (8, 10, ""), origin="deleted"))  # ends exactly at a
    assert tr.peek(SID, PATH, "r1") == (8, 13, "hello")
    tr.process(edit(2, (13, 15, ""), origin="deleted"))  # starts exactly at b
    assert tr.peek(SID, PATH, "r1") == (8, 13, "hello")
    ex = only_settled(tr.flush())
    assert ex.edit_count == 2 and ex.edit_origins == {"deleted": 2}
    assert ex.settled_at_ms == 2 + Q


def test_zero_width_region_absorbs_insertion() -> None:
    tr = opened(start=4, text="")
    tr.process(edit(1, (4, 4, "xy")))
    assert tr.peek(SID, PATH, "r1") == (4, 6, "xy")


def test_replacements_apply_in_order_each_in_previous_coordinates() -> None:
    tr = opened()
    # The first insertion shifts the region to [12, 17); the second, at 12,
    # is then an insertion at its start, not inside "hello".
    tr.process(edit(1, (0, 0, "ab"), (12, 12, "X")))
    assert tr.peek(SID, PATH, "r1") == (12, 18, "Xhello")
    ex = only_settled(tr.flush())
    assert ex.edit_count == 1  # one event touched it (counted once per event)


def test_utf16_surrogate_pairs() -> None:
    # "a😀b" is 4 UTF-16 units: a | d83d de00 | b, at buffer [5, 9).
    tr = opened(start=5, text="a😀b", enc="utf-16", cursor=8)
    with pytest.raises(InvalidEvent) as exc:
        tr.process(edit(1, (7, 7, "x"), enc="utf-16"))
    assert exc.value.reason == "splits_character"
    # The editor applied an edit we could not: the region can no longer be vouched for.
    assert exc.value.outcomes == [Dropped(region_id(SID, PATH, "r1"), "r1", "missed_edit", 1, SID, PATH)]
    assert tr.open_regions() == 0
    tr = opened(start=5, text="a😀b", enc="utf-16", cursor=8)
    tr.process(edit(2, (8, 8, "é"), enc="utf-16"))
    assert tr.peek(SID, PATH, "r1") == (5, 10, "a😀éb")
    tr.process(edit(3, (0, 2, "😀"), enc="utf-16"))  # same width: no shift
    assert tr.peek(SID, PATH, "r1") == (5, 10, "a😀éb")
    tr.process(edit(4, (6, 8, ""), enc="utf-16"))  # delete the emoji exactly
    ex = only_settled(tr.flush())
    assert ex.original_text == "a😀b" and ex.cursor == 2  # unit 8 -> code point 2
    assert ex.settled_text == "aéb" and ex.encoding == "utf-16"


def test_utf8_multibyte_offsets() -> None:
    # "é€x" is 2 + 3 + 1 bytes at buffer [0, 6).
    tr = opened(start=0, text="é€x", enc="utf-8", cursor=5)
    for bad in ((1, 1, "z"), (2, 3, ""), (0, 4, "")):
        probe = opened(start=0, text="é€x", enc="utf-8", cursor=5)
        with pytest.raises(InvalidEvent) as exc:
            probe.process(edit(1, bad, enc="utf-8"))
        assert exc.value.reason == "splits_character"
        assert probe.open_regions() == 0 and probe.stats.dropped_by_reason == {"missed_edit": 1}
    assert tr.peek(SID, PATH, "r1") == (0, 6, "é€x")
    tr.process(edit(2, (2, 5, "E"), enc="utf-8"))
    assert tr.peek(SID, PATH, "r1") == (0, 4, "éEx")
    tr.process(edit(3, (4, 4, "😀"), enc="utf-8"))
    assert tr.peek(SID, PATH, "r1") == (0, 8, "éEx😀")
    ex = only_settled(tr.flush())
    assert ex.cursor == 2 and ex.settled_text == "éEx😀"


# -- validation --------------------------------------------------------------


def _state(tr: Tracker) -> tuple[object, ...]:
    st_ = tr.stats
    return (
        tr.watermark_ms,
        tr.open_regions(),
        tr.oldest_open_birth_position(),
        tr.peek(SID, PATH, "r1"),
        tr.peek(SID, PATH, "r2"),
        (st_.events, st_.late_events, st_.regions_born, st_.settled, dict(st_.dropped_by_reason)),
    )


INVALID_REQUESTS = [
    ("span_reversed", req(50_000, 9, "", end=3, rid="r2", enc="utf-16")),
    ("cursor_out_of_range", req(50_000, 20, "abc", cursor=24, rid="r2", enc="utf-16")),
    ("cursor_out_of_range", req(50_000, 20, "abc", cursor=19, rid="r2", enc="utf-16")),
    ("text_length_mismatch", req(50_000, 20, "a😀", end=22, rid="r2", enc="utf-16")),
    ("splits_character", req(50_000, 20, "a😀", cursor=22, rid="r2", enc="utf-16")),
    ("encoding_mismatch", req(9_000, 0, "x", rid="r2", enc="utf-32")),
    ("invalid_text", req(50_000, 0, "\ud800", rid="r2", enc="utf-16", end=1)),
]
#: edits the tracker cannot apply: the region they may have changed is dropped
INVALID_EDITS = [
    ("replacement_reversed", edit(50_000, (0, 0, "x"), (6, 5, ""), enc="utf-16")),
    # first replacement is fine, the second splits the emoji of the moved region
    ("splits_character", edit(9_000, (0, 0, "xx"), (17, 17, "!"), enc="utf-16")),
    ("splits_character", edit(9_000, (15, 20, ""), enc="utf-16")),
    ("encoding_mismatch", edit(9_000, (0, 1, ""), enc="utf-8")),
    ("invalid_text", edit(9_000, (10, 10, "\ud800"), enc="utf-16")),
]


@pytest.mark.parametrize(("reason", "bad"), INVALID_EDITS)
def test_invalid_edit_drops_the_buffers_regions(reason: str, bad: BufferEdited) -> None:
    tr = Tracker()
    tr.process(req(0, 10, "ab😀cd", cursor=12, enc="utf-16"), position=7)
    tr.process(edit(4_000, (0, 0, "zz"), enc="utf-16"))
    tr.process(req(4_500, 0, "x", rid="other", sid="s2", enc="utf-16"))
    with pytest.raises(InvalidEvent) as exc:
        tr.process(bad, position=8)
    assert exc.value.reason == reason
    at = max(bad.time_ms, 4_000)
    if bad.time_ms >= Q + 4_000:  # its own clock proves r1 quiet first: r1 settles, nothing to drop
        assert only_settled(exc.value.outcomes).settled_text == "ab😀cd"
    else:
        assert exc.value.outcomes == [Dropped(region_id(SID, PATH, "r1"), "r1", "missed_edit", at, SID, PATH)]
    assert tr.peek("s2", PATH, "other") == (0, 1, "x")  # other buffers are untouched
    assert tr.stats.invalid_by_reason == {reason: 1}
    # Re-anchored by a new request, the buffer settles again.
    tr.process(req(at + 1, 0, "q", rid="r9", enc="utf-16"))
    assert [o.request_id for o in tr.flush()] == ["other", "r9"]  # type: ignore[union-attr]


@pytest.mark.parametrize(("reason", "bad"), INVALID_REQUESTS)
def test_invalid_request_raises_and_changes_nothing(reason: str, bad: object) -> None:
    def fresh() -> Tracker:
        tr = Tracker()
        tr.process(req(0, 10, "ab😀cd", cursor=12, enc="utf-16"), position=7)
        tr.process(edit(4_000, (0, 0, "zz"), enc="utf-16"))  # region now [12, 18)
        return tr

    tr, twin = fresh(), fresh()
    before = _state(tr)
    with pytest.raises(InvalidEvent) as exc:
        tr.process(bad, position=8)  # type: ignore[arg-type]
    assert exc.value.reason == reason
    assert _state(tr) == before  # the far-future time did not move the watermark either
    assert tr.stats.invalid_by_reason == {reason: 1}
    rest = [edit(6_000, (12, 13, "A"), enc="utf-16"), Tick(time_ms=40_000)]
    assert [tr.process(e) for e in rest] == [twin.process(e) for e in rest]
    assert twin.stats.invalid_by_reason == {}


def test_redelivered_request_is_ignored_open_or_settled() -> None:
    tr = opened()
    tr.process(edit(1_000, (10, 11, "J")))
    assert tr.process(req(1_000, 10, "hello")) == []  # the same request again, while open
    assert tr.peek(SID, PATH, "r1") == (10, 15, "Jello")
    assert only_settled(tr.process(Tick(time_ms=20_000))).settled_text == "Jello"
    assert tr.process(req(0, 10, "hello")) == [] and tr.process(Tick(time_ms=40_000)) == []
    assert tr.flush() == [] and tr.stats.ignored_by_reason == {"redelivered_request": 2}


def test_an_open_request_id_redelivered_after_the_id_memory_forgot_it_is_still_ignored() -> None:
    """Found by the checkpoint campaign: with more requests than max_request_ids while one stays
    open, a redelivery of the open id made a second region under the same key and a later fire
    raised KeyError (a crashed worker on every restart)."""
    tr = Tracker(TrackerConfig(max_request_ids=2))
    assert tr.process(req(0, 10, "hello", rid="r1")) == []
    for i, t in enumerate((100, 200, 300)):  # r1 falls out of the id memory, still open
        tr.process(req(t, 0, "", rid=f"x{i}"))
    assert tr.process(req(400, 10, "hello", rid="r1")) == []
    assert tr.stats.ignored_by_reason == {"redelivered_request": 1}
    settled = [o for o in tr.process(Tick(time_ms=60_000)) if isinstance(o, SettledExample)]
    assert sorted(e.request_id for e in settled) == ["r1", "x0", "x1", "x2"]


def test_encoding_may_change_once_regions_closed() -> None:
    tr = opened()
    out = tr.process(req(Q, 0, "é", rid="r2", enc="utf-8"))  # r1 settles first (rule b)
    assert only_settled(out).settled_text == "hello"
    assert tr.peek(SID, PATH, "r2") == (0, 2, "é")


def test_consent_false_is_never_invalid() -> None:
    tr = opened()
    out = tr.process(edit(1, (5, 3, ""), enc="utf-8", consent=False))
    assert out == [Dropped(region_id(SID, PATH, "r1"), "r1", "no_consent", 1, SID, PATH)]


# -- fates -------------------------------------------------------------------


def test_settled_example_fields() -> None:
    tr = Tracker()
    ctx = PromptContext(related=[])
    ev = PredictionRequested(
        time_ms=1_000,
        session_id=SID,
        path=PATH,
        consent=True,
        encoding="utf-32",
        request_id="req-9",
        region=Span(start=3, end=6),
        region_text="abc",
        cursor=4,
        context=ctx,
        production_prediction="abX",
        production_model="m1",
    )
    tr.process(ev)
    tr.process(edit(2_000, (6, 6, "d"), origin="paste"))
    tr.process(edit(2_500, (3, 4, "A"), origin="typed"))
    out = tr.process(Tick(time_ms=2_500 + Q + L))
    expected_id = hashlib.blake2b(f"{SID}\x1f{PATH}\x1freq-9".encode()).hexdigest()[:16]
    assert region_id(SID, PATH, "req-9") == expected_id
    assert out == [
        SettledExample(
            id=expected_id,
            request_id="req-9",
            session_id=SID,
            path=PATH,
            encoding="utf-32",
            requested_at_ms=1_000,
            settled_at_ms=2_500 + Q,
            original_text="abc",
            settled_text="Abcd",
            cursor=1,
            context=ctx,
            production_prediction="abX",
            production_model="m1",
            edit_origins={"paste": 1, "typed": 1},
            edit_count=2,
        )
    ]
    assert tr.open_regions() == 0 and tr.remembered_buffers() == 1  # its memory, bounded


def test_tick_driven_settle() -> None:
    tr = opened()
    assert tr.process(Tick(time_ms=Q + L - 1)) == []
    assert tr.watermark_ms == Q - 1
    ex = only_settled(tr.process(Tick(time_ms=Q + L)))
    assert ex.settled_at_ms == Q and ex.settled_text == "hello"
    assert tr.process(Tick(time_ms=5)) == [] and tr.watermark_ms == Q  # ticks never go back


def test_other_buffers_clocks_decide_nothing() -> None:
    tr = opened()
    tr.process(req(10 * Q, 0, "x", sid="fast"))
    assert only_settled(tr.process(edit(100 * Q, (0, 0, "x"), sid="fast"))).session_id == "fast"
    assert tr.peek(SID, PATH, "r1") == (10, 15, "hello")
    assert only_settled(tr.process(Tick(time_ms=Q + L))).settled_at_ms == Q


def test_same_buffer_later_event_settles_first_rule_b() -> None:
    # The watermark (t - L) has not reached the deadline, but this buffer's own
    # later event proves the quiet period passed, so the edit does not touch it.
    tr = opened()
    out = tr.process(edit(Q, (10, 15, "bye")))
    assert only_settled(out).settled_text == "hello"
    assert tr.open_regions() == 0
    # One millisecond earlier the same edit still lands in the region.
    tr = opened()
    assert tr.process(edit(Q - 1, (10, 15, "bye"))) == []
    ex = only_settled(tr.process(edit(2 * Q - 1, (0, 0, "x"))))
    assert ex.settled_text == "bye" and ex.settled_at_ms == 2 * Q - 1


def test_clock_regression_is_clamped_per_buffer() -> None:
    tr = Tracker()
    tr.process(req(5_000, 0, "abc"))
    tr.process(edit(4_000, (0, 0, "x")))  # effective time 5_000
    ex = only_settled(tr.flush())
    assert ex.settled_at_ms == 5_000 + Q


def test_ttl_expiry_and_tie_settles() -> None:
    cfg = TrackerConfig(quiescence_ms=1_000, lateness_ms=0, ttl_ms=5_000)
    tr = Tracker(cfg)
    tr.process(req(0, 0, "a"))
    for t in range(500, 4_600, 500):
        assert tr.process(edit(t, (0, 0, "x"))) == []
    assert tr.process(Tick(time_ms=4_999)) == []
    out = tr.process(Tick(time_ms=5_000))
    assert out == [Dropped(region_id(SID, PATH, "r1"), "r1", "ttl", 5_000, SID, PATH)]
    assert tr.stats.dropped_by_reason == {"ttl": 1}
    # Last edit at 4_000: settle deadline 5_000 == expiry -> settles.
    tr = Tracker(cfg)
    tr.process(req(0, 0, "a"))
    for t in range(500, 4_001, 500):
        tr.process(edit(t, (0, 0, "x")))
    assert tr.process(Tick(time_ms=4_999)) == []
    assert only_settled(tr.process(Tick(time_ms=5_000))).settled_at_ms == 5_000


def test_size_cap_at_birth_and_after_edit() -> None:
    tr = Tracker(TrackerConfig(max_region_bytes=10))
    out = tr.process(req(0, 0, "x" * 11, rid="big"))
    assert out == [Dropped(region_id(SID, PATH, "big"), "big", "too_large", 0, SID, PATH)]
    assert tr.open_regions() == 0 and tr.stats.regions_born == 1
    # 5 UTF-16 units but 10 UTF-8 bytes: at the cap, kept.
    assert tr.process(req(1, 0, "ééééé", enc="utf-16")) == []
    out = tr.process(edit(2, (5, 5, "a"), enc="utf-16"))
    assert out == [Dropped(region_id(SID, PATH, "r1"), "r1", "too_large", 2, SID, PATH)]
    assert tr.stats.dropped_by_reason == {"too_large": 2}
    assert tr.open_regions() == 0 and tr.flush() == []


def test_consent_withdrawn_drops_open_regions_after_due_ones_settle() -> None:
    tr = Tracker()
    tr.process(req(0, 0, "a", rid="early"))
    tr.process(req(5_000, 3, "b", rid="late"))
    out = tr.process(edit(Q, (0, 0, "z"), consent=False))
    settled = [o for o in out if isinstance(o, SettledExample)]
    assert only_settled(settled).request_id == "early"
    assert [o for o in out if isinstance(o, Dropped)] == [
        Dropped(region_id(SID, PATH, "late"), "late", "no_consent", Q, SID, PATH)
    ]
    assert tr.open_regions() == 0


def test_request_without_consent_is_not_tracked() -> None:
    tr = Tracker()
    out = tr.process(req(0, 0, "abc", consent=False))
    assert out == [Dropped(region_id(SID, PATH, "r1"), "r1", "no_consent", 0, SID, PATH)]
    assert tr.open_regions() == 0 and tr.stats.regions_born == 0
    assert tr.stats.dropped_by_reason == {"no_consent": 1}


def test_slow_clock_is_not_late_and_still_applied() -> None:
    tr = Tracker()
    tr.process(req(0, 0, "abc"))
    tr.process(Tick(time_ms=50_000))  # the region arrived at 0: Q + L later it is decided
    tr = Tracker()
    tr.process(Tick(time_ms=50_000))
    tr.process(req(0, 0, "abc"))  # a client clock 50 s behind: aligned to its arrival
    assert tr.process(Tick(time_ms=50_000 + Q + L - 1)) == []
    assert tr.process(edit(2_000, (3, 3, "d"))) == []
    assert tr.stats.late_events == 0
    assert tr.peek(SID, PATH, "r1") == (0, 4, "abcd")
    # the edit arrived at 50_000 + Q + L - 1 with 10 s of its quiet period left
    assert tr.process(Tick(time_ms=50_000 + 2 * Q + 2 * L - 2)) == []
    assert only_settled(tr.process(Tick(time_ms=50_000 + 2 * Q + 2 * L - 1))).settled_at_ms == 2_000 + Q


def test_event_older_than_a_decided_fate_is_late() -> None:
    tr = Tracker()
    tr.process(req(0, 0, "abc"))
    assert only_settled(tr.process(Tick(time_ms=Q + L))).settled_text == "abc"
    assert tr.process(edit(5_000, (3, 3, "d"))) == []  # inside the decided quiet period
    assert tr.stats.late_events == 1


def test_flush_order_is_by_deadline_then_id() -> None:
    tr = Tracker()
    for sid in ("c", "a", "b"):
        tr.process(req(0, 0, "x", sid=sid))
    tr.process(req(0, 0, "x", sid="z", rid="z"))
    tr.process(edit(1, (0, 0, "y"), sid="z"))  # pushes z's deadline back
    out = tr.flush()
    ids = sorted(region_id(s, PATH, "r1") for s in "abc")
    assert [o.id for o in out] == [*ids, region_id("z", PATH, "z")]  # type: ignore[union-attr]
    assert tr.open_regions() == 0


def test_oldest_open_birth_position() -> None:
    tr = Tracker()
    assert tr.oldest_open_birth_position() is None
    tr.process(req(0, 0, "a", rid="a"), position=10)
    tr.process(req(0, 0, "a", rid="b", sid="s2"), position=11)
    tr.process(req(3_000, 0, "a", rid="c"), position=12)
    assert tr.oldest_open_birth_position() == 10
    tr.process(edit(Q, (9, 9, "x")), position=13)  # settles a (rule b), c stays
    assert tr.oldest_open_birth_position() == 11
    tr.process(Tick(time_ms=Q + L), position=14)  # watermark settles b
    assert tr.oldest_open_birth_position() == 12
    tr.flush()
    assert tr.oldest_open_birth_position() is None


def test_settle_all_skips_invalid_unless_strict() -> None:
    events = [req(0, 0, "ab"), edit(1, (2, 1, "")), edit(2, (2, 2, "c"))]
    out = settle_all(events, flush=True)
    assert out == [Dropped(region_id(SID, PATH, "r1"), "r1", "missed_edit", 1, SID, PATH)]
    events = [req(0, 0, "ab"), req(1, 0, "a", rid="r2", end=3), edit(2, (2, 2, "c"))]
    assert only_settled(settle_all(events, flush=True)).settled_text == "abc"
    with pytest.raises(InvalidEvent):
        settle_all(events, strict=True)


# -- reference model ---------------------------------------------------------
#
# Offsets in code points on the FULL buffer text; a region is cut out of it. It
# only knows the same-buffer rule: a region meets its fate at the first later
# event of its buffer with time >= fate, or at end of input.

PCFG = TrackerConfig(quiescence_ms=100, lateness_ms=150, ttl_ms=220, max_region_bytes=16)
ALPHABET = "ab \né߀😀𝄞"
ORIGINS = ("typed", "deleted", "paste", "format")


@dataclass
class RefRegion:
    ev: PredictionRequested
    a: int
    b: int
    cursor: int
    birth: int
    last: int = 0
    count: int = 0
    origins: dict[str, int] = field(default_factory=dict)

    @property
    def rid(self) -> str:
        raw = "\x1f".join((self.ev.session_id, self.ev.path, self.ev.request_id)).encode()
        return hashlib.blake2b(raw).hexdigest()[:16]


class RefBuffer:
    def __init__(self, text: str, cfg: TrackerConfig = PCFG) -> None:
        self.full = text
        self.cfg = cfg
        self.open: list[RefRegion] = []
        self.outcomes: list[Outcome] = []

    def _drop(self, r: RefRegion, reason: str, at: int) -> None:
        self.outcomes.append(
            Dropped(r.rid, r.ev.request_id, reason, at, r.ev.session_id, r.ev.path)  # type: ignore
        )

    def _close(self, r: RefRegion) -> None:
        settle, expire = r.last + self.cfg.quiescence_ms, r.birth + self.cfg.ttl_ms
        if settle > expire:
            self._drop(r, "ttl", expire)
            return
        ev = r.ev
        self.outcomes.append(
            SettledExample(
                id=r.rid,
                request_id=ev.request_id,
                session_id=ev.session_id,
                path=ev.path,
                encoding=ev.encoding,
                requested_at_ms=r.birth,
                settled_at_ms=settle,
                original_text=ev.region_text,
                settled_text=self.full[r.a : r.b],
                cursor=r.cursor,
                context=ev.context,
                edit_origins=dict(r.origins),
                edit_count=r.count,
            )
        )

    def _fate(self, r: RefRegion) -> int:
        return min(r.last + self.cfg.quiescence_ms, r.birth + self.cfg.ttl_ms)

    def _fire_due(self, t: int) -> None:
        for r in [r for r in self.open if self._fate(r) <= t]:
            self.open.remove(r)
            self._close(r)

    def _too_big(self, r: RefRegion) -> bool:
        return len(self.full[r.a : r.b].encode()) > self.cfg.max_region_bytes

    def request(self, ev: PredictionRequested, a: int, b: int, cursor: int) -> None:
        t = ev.time_ms
        self._fire_due(t)
        if not ev.consent:
            self._withdraw(t)
            self._drop(RefRegion(ev, a, b, 0, t), "no_consent", t)
            return
        assert self.full[a:b] == ev.region_text
        r = RefRegion(ev, a, b, cursor - a, t, last=t)
        if self._too_big(r):
            self._drop(r, "too_large", t)
        else:
            self.open.append(r)

    def edit(self, ev: BufferEdited, reps: list[tuple[int, int, str]]) -> None:
        t = ev.time_ms
        self._fire_due(t)
        if not ev.consent:
            self._withdraw(t)
            return
        touched: set[int] = set()
        for s, e, x in reps:
            self.full = self.full[:s] + x + self.full[e:]
            delta = len(x) - (e - s)
            for r in self.open:
                if e < r.a:
                    r.a, r.b = r.a + delta, r.b + delta
                elif s > r.b:
                    pass
                else:
                    r.a, r.b = min(r.a, s), max(r.b, e) + delta
                    touched.add(id(r))
        for r in list(self.open):
            if id(r) in touched:
                r.last = t
                r.count += 1
                r.origins[ev.origin] = r.origins.get(ev.origin, 0) + 1
                if self._too_big(r):
                    self.open.remove(r)
                    self._drop(r, "too_large", t)

    def _withdraw(self, t: int) -> None:
        for r in self.open:
            self._drop(r, "no_consent", t)
        self.open = []

    def flush(self) -> None:
        for r in self.open:
            self._close(r)
        self.open = []


def _units(text: str, i: int, enc: str) -> int:
    return units_len(text[:i], enc)  # type: ignore[arg-type]


@dataclass
class GenBuffer:
    sid: str
    enc: str
    ref: RefBuffer
    last_t: int = 0


#: (items, buffers); items are ("tick", Tick) or ("buf", buffer index, event)
Scenario = tuple[list, list[GenBuffer]]


@st.composite
def streams(draw: st.DrawFn, max_buffers: int = 4, max_steps: int = 40) -> Scenario:
    """A multi-buffer stream where no event is late; also drives the reference."""
    nbuf = draw(st.integers(1, max_buffers))
    bufs = [
        GenBuffer(
            sid=f"s{i}",
            enc=draw(st.sampled_from(["utf-8", "utf-16", "utf-32"])),
            ref=RefBuffer(draw(st.text(ALPHABET, max_size=12))),
        )
        for i in range(nbuf)
    ]
    items: list = []  # ("tick", Tick) | ("buf", index, event)
    clock = 0
    nreq = 0
    for _ in range(draw(st.integers(1, max_steps))):
        # Coarse 10 ms steps make exact ties (deadline == event time == watermark,
        # settle deadline == expiry) common.
        clock += 10 * draw(st.integers(0, 8))
        # Events of different buffers arrive out of time order by up to L. The
        # full L is drawn often: there the watermark of one tracker passes a
        # deadline that a partition's has not, and only rule (b) keeps them equal.
        lag = PCFG.lateness_ms
        t = clock - draw(st.sampled_from([0, lag]) | st.integers(0, lag // 10).map(10 .__mul__))
        what = draw(st.sampled_from(["tick"] + ["req"] * 3 + ["edit"] * 8 + ["noconsent"]))
        if what == "tick" or t < 0:
            # Often the latest time that keeps every later event on time: the
            # watermark then runs as far ahead as it ever may.
            items.append(("tick", Tick(time_ms=clock if draw(st.booleans()) else max(t, 0))))
            continue
        i = draw(st.integers(0, nbuf - 1))
        g = bufs[i]
        t = g.last_t = max(t, g.last_t)  # each buffer's own events in order
        ref, enc = g.ref, g.enc
        full = ref.full
        if what == "req" or (what == "noconsent" and draw(st.booleans())):
            a = draw(st.integers(0, len(full)))
            b = draw(st.integers(a, min(len(full), a + 8)))
            c = draw(st.integers(a, b))
            nreq += 1
            ev = PredictionRequested(
                time_ms=t,
                session_id=g.sid,
                path=PATH,
                consent=what == "req",
                encoding=enc,  # type: ignore[arg-type]
                request_id=f"q{nreq}",
                region=Span(start=_units(full, a, enc), end=_units(full, b, enc)),
                region_text=full[a:b],
                cursor=_units(full, c, enc),
            )
            ref.request(ev, a, b, c)
        else:
            reps_cp, reps_units = [], []
            cur = full
            # Half the edits aim near an open region's boundary, where the rules differ.
            anchors = [p for r in ref.open for p in (r.a, r.b)]
            for _ in range(draw(st.integers(1, 3))):
                if anchors and draw(st.booleans()):
                    s = draw(st.sampled_from(anchors)) + draw(st.integers(-2, 1))
                    s = max(0, min(len(cur), s))
                else:
                    s = draw(st.integers(0, len(cur)))
                e = draw(st.integers(s, min(len(cur), s + 4)))
                x = draw(st.text(ALPHABET, max_size=4))
                reps_cp.append((s, e, x))
                start, end = _units(cur, s, enc), _units(cur, e, enc)
                reps_units.append(Replacement(start=start, end=end, text=x))
                cur = cur[:s] + x + cur[e:]
            ev = BufferEdited(
                time_ms=t,
                session_id=g.sid,
                path=PATH,
                consent=what == "edit",
                encoding=enc,  # type: ignore[arg-type]
                origin=draw(st.sampled_from(ORIGINS)),  # type: ignore[arg-type]
                replacements=reps_units,
            )
            ref.edit(ev, reps_cp)
        items.append(("buf", i, ev))
    for g in bufs:
        g.ref.flush()
    return items, bufs


def _key(o: Outcome) -> tuple[int, str, str]:
    if isinstance(o, Dropped):
        return (o.at_ms, o.region_id, o.reason)
    return (o.settled_at_ms, o.id, "settled")


def _run(tracker: Tracker, events: list) -> list[Outcome]:
    out: list[Outcome] = []
    for ev in events:
        out.extend(tracker.process(ev))
    return out + tracker.flush()


@settings(max_examples=250, deadline=None)
@given(streams(max_buffers=1, max_steps=30))
def test_single_buffer_matches_full_text_reference(scenario: Scenario) -> None:
    """Splicing region texts == cutting the moved region out of the full buffer."""
    items, bufs = scenario
    tracker = Tracker(PCFG)
    got = _run(tracker, [item[-1] for item in items])
    assert tracker.stats.late_events == 0
    assert sorted(got, key=_key) == sorted(bufs[0].ref.outcomes, key=_key)


@settings(max_examples=200, deadline=None)
@given(streams(max_buffers=5, max_steps=40), st.data())
def test_partitioning_does_not_change_outcomes(scenario: Scenario, data: st.DataObject) -> None:
    """One tracker, or buffers spread over 2-4 partition trackers: same outcomes."""
    items, bufs = scenario
    single = Tracker(PCFG)
    got_single = sorted(_run(single, [item[-1] for item in items]), key=_key)
    assert single.stats.late_events == 0

    nparts = data.draw(st.integers(2, 4))
    owner = [data.draw(st.integers(0, nparts - 1)) for _ in bufs]
    parts: list[list] = [[] for _ in range(nparts)]
    for item in items:
        if item[0] == "tick":  # each partition sees an arbitrary subset of the ticks
            for p in data.draw(st.sets(st.integers(0, nparts - 1))):
                parts[p].append(item[1])
        else:
            parts[owner[item[1]]].append(item[2])
    got_parts: list[Outcome] = []
    for events in parts:
        tracker = Tracker(PCFG)
        got_parts.extend(_run(tracker, events))
        assert tracker.stats.late_events == 0
    assert sorted(got_parts, key=_key) == got_single
    # and both are right (not merely equal)
    assert got_single == sorted((o for g in bufs for o in g.ref.outcomes), key=_key)


@settings(max_examples=100, deadline=None)
@given(streams(max_buffers=3, max_steps=30))
def test_outcomes_of_each_call_are_ordered(scenario: Scenario) -> None:
    tracker = Tracker(PCFG)
    for item in items_of(scenario):
        out = tracker.process(item)
        assert out == sorted(out, key=lambda o: _key(o)[:2])
    out = tracker.flush()
    assert out == sorted(out, key=lambda o: _key(o)[:2])


def items_of(scenario: Scenario) -> list:
    return [item[-1] for item in scenario[0]]
