"""The region tracker: pure event-time logic that turns edits into settled examples.

No Faust, no Kafka: the stream agent feeds events in partition order and
publishes what comes back, the offline tool feeds a file. Everything it emits is
a function of the input events alone, so a replay, a crash-restart or a
different spread of buffers over partitions produces the same records.

Contract in brief (see ``Tracker``):

* A ``PredictionRequested`` births a region (an editable span of a buffer).
* ``BufferEdited`` replacements move regions; one that overlaps or touches a
  region rewrites its text and restarts its quiet timer.
* A region settles at ``last_edit + quiescence`` unless its TTL
  (``birth + ttl``) comes first (tie: settle). A deadline D fires when the
  watermark (max event time seen - lateness) reaches D, or when a later event
  of the same buffer has effective time >= D (its own events are in order, so
  the quiet period provably passed). The second rule is what makes outcomes
  independent of partitioning and replay speed.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from typing import Iterable, Literal, Union

from settle.schemas.events import (
    BufferEdited,
    Event,
    OffsetEncoding,
    PredictionRequested,
    Replacement,
    Tick,
)
from settle.schemas.examples import DropReason, SettledExample

from settle.streams.settling.offsets import OffsetError, to_index, units_len

__all__ = [
    "TrackerConfig",
    "InvalidEvent",
    "InvalidReason",
    "Dropped",
    "Outcome",
    "TrackerStats",
    "Tracker",
    "region_id",
    "settle_all",
]

InvalidReason = Literal[
    "span_reversed",  # region.start > region.end
    "cursor_out_of_range",  # cursor outside [region.start, region.end]
    "text_length_mismatch",  # region_text is not end - start units long
    "replacement_reversed",  # a replacement with start > end
    "splits_character",  # an offset inside one character of a region's text
    "invalid_text",  # text with no form in the declared encoding (lone surrogate)
    "encoding_mismatch",  # encoding differs from the buffer's open regions
    "duplicate_request",  # request_id already open in this buffer
]


class InvalidEvent(ValueError):
    """An event the tracker refused; nothing in the tracker changed.

    The stream agent dead-letters it under ``reason`` (a stable code) and keeps
    going, so one bad editor cannot wedge a partition.
    """

    def __init__(self, reason: InvalidReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: InvalidReason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """Timing and size knobs; all times in event-time milliseconds."""

    #: quiet period after the last overlapping edit before a region settles
    quiescence_ms: int = 10_000
    #: how far behind the max seen event time the watermark trails
    lateness_ms: int = 2_000
    #: a region still being edited this long after birth is dropped ("ttl")
    ttl_ms: int = 300_000
    #: regions whose UTF-8 text exceeds this are dropped ("too_large")
    max_region_bytes: int = 4096

    def __post_init__(self) -> None:
        # Deadlines must lie strictly after the event that set them, or the
        # same-buffer rule would fire a region before the event that created it.
        if self.quiescence_ms <= 0 or self.ttl_ms <= 0:
            raise ValueError("quiescence_ms and ttl_ms must be > 0")
        if self.lateness_ms < 0 or self.max_region_bytes < 0:
            raise ValueError("lateness_ms and max_region_bytes must be >= 0")


@dataclass(frozen=True, slots=True)
class Dropped:
    """A region that will never become an example, and why (for metrics and audit)."""

    region_id: str
    request_id: str
    reason: DropReason
    #: expiry (birth + ttl) for "ttl"; the dropping event's effective time otherwise
    at_ms: int
    session_id: str
    path: str


Outcome = Union[SettledExample, Dropped]


@dataclass(slots=True)
class TrackerStats:
    """Counters the streaming layer exports as metrics."""

    #: events accepted (ticks included; invalid ones are not counted here)
    events: int = 0
    #: accepted buffer events whose effective time was below the watermark
    late_events: int = 0
    #: regions created from consenting, valid requests (too-large ones included)
    regions_born: int = 0
    settled: int = 0
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    invalid_by_reason: dict[str, int] = field(default_factory=dict)


def region_id(session_id: str, path: str, request_id: str) -> str:
    """Stable example id: consumers dedupe replays and restarts on it."""
    raw = "\x1f".join((session_id, path, request_id)).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw).hexdigest()[:16]


class _Region:
    """Mutable state of one open region (internal)."""

    __slots__ = (
        "serial",
        "rid",
        "request",
        "buffer",
        "start",
        "end",
        "text",
        "ascii",
        "cursor_cp",
        "birth_ms",
        "last_edit_ms",
        "expire_ms",
        "fate_ms",
        "origins",
        "edit_count",
    )

    serial: int
    rid: str
    request: PredictionRequested
    buffer: _Buffer
    start: int
    end: int
    text: str
    ascii: bool
    cursor_cp: int
    birth_ms: int
    last_edit_ms: int
    expire_ms: int
    #: min(settle deadline, expiry); only ever grows, so heap entries are lower bounds
    fate_ms: int
    origins: dict[str, int] | None
    edit_count: int


class _Buffer:
    """Per-buffer state; exists only while the buffer has open regions."""

    __slots__ = ("key", "encoding", "regions", "last_ms")

    def __init__(self, key: tuple[str, str], encoding: OffsetEncoding, last_ms: int) -> None:
        self.key = key
        self.encoding = encoding
        #: open regions by request_id
        self.regions: dict[str, _Region] = {}
        #: last effective event time (clamps small clock regressions)
        self.last_ms = last_ms


def _outcome_order(o: Outcome) -> tuple[int, str]:
    if type(o) is Dropped:
        return (o.at_ms, o.region_id)
    return (o.settled_at_ms, o.id)  # type: ignore[union-attr]


class Tracker:
    """Tracks open regions of the buffers of one partition (or of a whole file).

    ``process`` validates an event completely before changing anything: an
    invalid one raises InvalidEvent and leaves the tracker as it was (only
    ``stats.invalid_by_reason`` counts it).
    """

    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:
        self.config = config
        self.stats = TrackerStats()
        self._buffers: dict[tuple[str, str], _Buffer] = {}
        #: open regions by serial (serials are never reused, request ids may be)
        self._live: dict[int, _Region] = {}
        #: (fate lower bound, region id, serial); stale entries are skipped lazily
        self._deadlines: list[tuple[int, str, int]] = []
        #: (birth position, serial) of regions born with a position
        self._positions: list[tuple[int, int]] = []
        self._max_ms: int | None = None
        self._serial = 0

    # -- queries -------------------------------------------------------------

    @property
    def watermark_ms(self) -> int | None:
        """Max event time seen minus lateness; None before the first event."""
        return None if self._max_ms is None else self._max_ms - self.config.lateness_ms

    def open_regions(self) -> int:
        return len(self._live)

    def peek(self, session_id: str, path: str, request_id: str) -> tuple[int, int, str] | None:
        """(start, end, text) of an open region, in buffer units; for tests and debugging."""
        buf = self._buffers.get((session_id, path))
        region = buf.regions.get(request_id) if buf is not None else None
        return None if region is None else (region.start, region.end, region.text)

    def oldest_open_birth_position(self) -> int | None:
        """Smallest source position among open regions' births (None if none).

        The stream commits consumer offsets only up to here, so re-reading from
        it after a crash rebuilds every open region. Regions born without a
        position are not considered.
        """
        heap, live = self._positions, self._live
        while heap and heap[0][1] not in live:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # -- input ---------------------------------------------------------------

    def process(self, event: Event, position: int | None = None) -> list[Outcome]:
        """Apply one event; return the outcomes it caused, by (deadline, region id).

        ``position`` is the event's source offset, remembered for regions it
        births (see ``oldest_open_birth_position``).
        """
        try:
            cls = type(event)
            if cls is BufferEdited:
                return self._edited(event)  # type: ignore[arg-type]
            if cls is PredictionRequested:
                return self._requested(event, position)  # type: ignore[arg-type]
            if cls is Tick:
                return self._tick(event.time_ms)
            if isinstance(event, BufferEdited):
                return self._edited(event)
            if isinstance(event, PredictionRequested):
                return self._requested(event, position)
            if isinstance(event, Tick):
                return self._tick(event.time_ms)
        except InvalidEvent as exc:
            counts = self.stats.invalid_by_reason
            counts[exc.reason] = counts.get(exc.reason, 0) + 1
            raise
        raise TypeError(f"not an event: {type(event).__name__}")

    def flush(self) -> list[Outcome]:
        """End of input: every open region meets its own fate (settle or ttl).

        As if the watermark were +infinity; the max event time is unchanged.
        """
        out: list[Outcome] = []
        for region in list(self._live.values()):
            self._fire(region, out)
        self._deadlines.clear()
        self._positions.clear()
        if len(out) > 1:
            out.sort(key=_outcome_order)
        return out

    # -- event kinds ---------------------------------------------------------

    def _tick(self, time_ms: int) -> list[Outcome]:
        self.stats.events += 1
        mx = self._max_ms
        if mx is None or time_ms > mx:
            self._max_ms = mx = time_ms
        out: list[Outcome] = []
        heap = self._deadlines
        if heap and heap[0][0] <= mx - self.config.lateness_ms:
            self._fire_until(mx - self.config.lateness_ms, out)
            if len(out) > 1:
                out.sort(key=_outcome_order)
        return out

    def _effective(self, ev: BufferEdited | PredictionRequested) -> tuple[tuple[str, str], _Buffer | None, int]:
        """(buffer key, buffer state, effective time): a buffer's clock never runs backwards."""
        key = (ev.session_id, ev.path)
        buf = self._buffers.get(key)
        t = ev.time_ms if buf is None else max(ev.time_ms, buf.last_ms)
        return key, buf, t

    def _edited(self, ev: BufferEdited) -> list[Outcome]:
        key, buf, t = self._effective(ev)
        if not ev.consent:
            return self._no_consent(ev, key, t)

        reps = ev.replacements
        for rep in reps:
            if rep.start > rep.end:
                raise InvalidEvent(
                    "replacement_reversed", f"replacement start {rep.start} > end {rep.end}"
                )
        plan = None
        if buf is not None:
            horizon = self._horizon(t)
            survivors = [r for r in buf.regions.values() if r.fate_ms > horizon]
            if survivors:
                if ev.encoding != buf.encoding:
                    raise InvalidEvent(
                        "encoding_mismatch",
                        f"event uses {ev.encoding}, buffer's open regions use {buf.encoding}",
                    )
                plan = _plan_edit(survivors, reps, buf.encoding)

        # -- valid: commit --
        out: list[Outcome] = []
        self._advance(t, out)
        self._fire_buffer(key, t, out)
        if plan is not None:
            cap = self.config.max_region_bytes
            fate_after_edit = t + self.config.quiescence_ms
            origin = ev.origin
            for region, start, end, text, is_ascii, touched, size in plan:
                region.start = start
                region.end = end
                if touched:
                    region.text = text
                    region.ascii = is_ascii
                    region.last_edit_ms = t
                    exp = region.expire_ms
                    region.fate_ms = fate_after_edit if fate_after_edit < exp else exp
                    region.edit_count += 1
                    origins = region.origins
                    if origins is None:
                        region.origins = {origin: 1}
                    else:
                        origins[origin] = origins.get(origin, 0) + 1
                    if size > cap:
                        self._remove(region)
                        out.append(self._drop(region, "too_large", t))
            buf = self._buffers.get(key)
            if buf is not None:
                buf.last_ms = t
        if len(out) > 1:
            out.sort(key=_outcome_order)
        return out

    def _requested(self, ev: PredictionRequested, position: int | None) -> list[Outcome]:
        key, buf, t = self._effective(ev)
        if not ev.consent:
            return self._no_consent(ev, key, t)

        start, end = ev.region.start, ev.region.end
        cursor = ev.cursor
        if start > end:
            raise InvalidEvent("span_reversed", f"region start {start} > end {end}")
        if not start <= cursor <= end:
            raise InvalidEvent("cursor_out_of_range", f"cursor {cursor} outside [{start}, {end}]")
        enc = ev.encoding
        text = ev.region_text
        is_ascii = text.isascii()
        try:
            n = len(text) if is_ascii or enc == "utf-32" else units_len(text, enc)
            if n != end - start:
                raise InvalidEvent(
                    "text_length_mismatch",
                    f"region_text is {n} {enc} units, span is {end - start}",
                )
            if is_ascii or enc == "utf-32":
                cursor_cp = cursor - start
            else:
                cursor_cp = to_index(text, cursor - start, enc)
            size = len(text) if is_ascii else n if enc == "utf-8" else units_len(text, "utf-8")
        except OffsetError as exc:
            raise _invalid_from(exc, "cursor") from None
        if buf is not None:
            horizon = self._horizon(t)
            if any(r.fate_ms > horizon for r in buf.regions.values()):
                if enc != buf.encoding:
                    raise InvalidEvent(
                        "encoding_mismatch",
                        f"event uses {enc}, buffer's open regions use {buf.encoding}",
                    )
                other = buf.regions.get(ev.request_id)
                if other is not None and other.fate_ms > horizon:
                    raise InvalidEvent(
                        "duplicate_request", f"request {ev.request_id!r} is already open"
                    )

        # -- valid: commit --
        out: list[Outcome] = []
        self._advance(t, out)
        self._fire_buffer(key, t, out)
        self.stats.regions_born += 1
        rid = region_id(ev.session_id, ev.path, ev.request_id)
        buf = self._buffers.get(key)
        if size > self.config.max_region_bytes:
            self._count_drop("too_large")
            out.append(Dropped(rid, ev.request_id, "too_large", t, ev.session_id, ev.path))
        else:
            if buf is None:
                buf = self._buffers[key] = _Buffer(key, enc, t)
            r = _Region()
            self._serial += 1
            r.serial = serial = self._serial
            r.rid = rid
            r.request = ev
            r.buffer = buf
            r.start = start
            r.end = end
            r.text = text
            r.ascii = is_ascii
            r.cursor_cp = cursor_cp
            r.birth_ms = r.last_edit_ms = t
            r.expire_ms = t + self.config.ttl_ms
            q = t + self.config.quiescence_ms
            r.fate_ms = q if q < r.expire_ms else r.expire_ms
            r.origins = None
            r.edit_count = 0
            buf.regions[ev.request_id] = r
            self._live[serial] = r
            heapq.heappush(self._deadlines, (r.fate_ms, rid, serial))
            if position is not None:
                heapq.heappush(self._positions, (position, serial))
        if buf is not None:
            buf.last_ms = t
        if len(out) > 1:
            out.sort(key=_outcome_order)
        return out

    def _no_consent(
        self, ev: PredictionRequested | BufferEdited, key: tuple[str, str], t: int
    ) -> list[Outcome]:
        # Regions whose quiet period ended before this event settle first (the
        # user consented then); everything still open is dropped. Content of a
        # non-consenting event is never looked at, so it cannot be invalid.
        out: list[Outcome] = []
        self._advance(t, out)
        self._fire_buffer(key, t, out)
        buf = self._buffers.pop(key, None)
        if buf is not None:
            for region in list(buf.regions.values()):
                del self._live[region.serial]
                out.append(self._drop(region, "no_consent", t))
            buf.regions.clear()
        if type(ev) is PredictionRequested or isinstance(ev, PredictionRequested):
            self._count_drop("no_consent")
            rid = region_id(ev.session_id, ev.path, ev.request_id)
            out.append(Dropped(rid, ev.request_id, "no_consent", t, ev.session_id, ev.path))
        if len(out) > 1:
            out.sort(key=_outcome_order)
        return out

    # -- internals -----------------------------------------------------------

    def _horizon(self, t: int) -> int:
        """Regions with fate <= this fire before a buffer event at effective time t applies."""
        mx = self._max_ms
        if mx is None or t > mx:
            mx = t
        wm = mx - self.config.lateness_ms
        return t if t > wm else wm

    def _advance(self, t: int, out: list[Outcome]) -> None:
        """Count an accepted buffer event at effective time t and fire what the watermark passed."""
        stats = self.stats
        stats.events += 1
        mx = self._max_ms
        lateness = self.config.lateness_ms
        if mx is None:
            self._max_ms = mx = t
        else:
            if t < mx - lateness:
                stats.late_events += 1
            if t > mx:
                self._max_ms = mx = t
        heap = self._deadlines
        if heap and heap[0][0] <= mx - lateness:
            self._fire_until(mx - lateness, out)

    def _fire_until(self, wm: int, out: list[Outcome]) -> None:
        heap, live = self._deadlines, self._live
        while heap and heap[0][0] <= wm:
            _, rid, serial = heap[0]
            region = live.get(serial)
            if region is None:
                heapq.heappop(heap)
            elif region.fate_ms > heap[0][0]:
                # Edited since pushed: the entry was only a lower bound.
                heapq.heapreplace(heap, (region.fate_ms, rid, serial))
            else:
                heapq.heappop(heap)
                self._fire(region, out)

    def _fire_buffer(self, key: tuple[str, str], t: int, out: list[Outcome]) -> None:
        """Rule (b): a later event of the same buffer proves quiet periods ending <= t passed."""
        buf = self._buffers.get(key)
        if buf is None:
            return
        due = [r for r in buf.regions.values() if r.fate_ms <= t]
        for region in due:
            self._fire(region, out)

    def _remove(self, region: _Region) -> None:
        del self._live[region.serial]
        buf = region.buffer
        del buf.regions[region.request.request_id]
        if not buf.regions:
            del self._buffers[buf.key]

    def _fire(self, region: _Region, out: list[Outcome]) -> None:
        self._remove(region)
        settle_ms = region.last_edit_ms + self.config.quiescence_ms
        if settle_ms <= region.expire_ms:
            self.stats.settled += 1
            ev = region.request
            out.append(
                SettledExample(
                    id=region.rid,
                    request_id=ev.request_id,
                    session_id=ev.session_id,
                    path=ev.path,
                    encoding=region.buffer.encoding,
                    requested_at_ms=region.birth_ms,
                    settled_at_ms=settle_ms,
                    original_text=ev.region_text,
                    settled_text=region.text,
                    cursor=region.cursor_cp,
                    context=ev.context,
                    production_prediction=ev.production_prediction,
                    production_model=ev.production_model,
                    edit_origins=dict(region.origins) if region.origins else {},
                    edit_count=region.edit_count,
                )
            )
        else:
            out.append(self._drop(region, "ttl", region.expire_ms))

    def _count_drop(self, reason: DropReason) -> None:
        counts = self.stats.dropped_by_reason
        counts[reason] = counts.get(reason, 0) + 1

    def _drop(self, region: _Region, reason: DropReason, at_ms: int) -> Dropped:
        self._count_drop(reason)
        ev = region.request
        return Dropped(region.rid, ev.request_id, reason, at_ms, ev.session_id, ev.path)


_PlanRow = tuple[_Region, int, int, str, bool, bool, int]


def _plan_edit(
    survivors: list[_Region], reps: list[Replacement], enc: OffsetEncoding
) -> list[_PlanRow]:
    """Compute every survivor's span and text after ``reps`` without touching it.

    Raises InvalidEvent, so a bad replacement anywhere in the event leaves all
    regions as they were. Rows: (region, start, end, text, ascii, touched, utf8 size).
    """
    states = [[r, r.start, r.end, r.text, r.ascii, False] for r in survivors]
    utf32 = enc == "utf-32"
    for rep in reps:
        s, e, new = rep.start, rep.end, rep.text
        delta: int | None = None
        new_ascii = False
        for st in states:
            a = st[1]
            b = st[2]
            if s > b:
                continue
            if delta is None:
                new_ascii = new.isascii()
                try:
                    n = len(new) if new_ascii or utf32 else units_len(new, enc)
                except OffsetError as exc:
                    raise _invalid_from(exc, "replacement text") from None
                delta = n - (e - s)
            if e < a:
                st[1] = a + delta
                st[2] = b + delta
                continue
            # Overlapping or touching: the region absorbs the replacement.
            text: str = st[3]
            is_ascii: bool = st[4]
            direct = is_ascii or utf32
            try:
                if s <= a:
                    prefix = ""
                elif s == b:
                    prefix = text
                else:
                    prefix = text[: s - a if direct else to_index(text, s - a, enc)]
                if e >= b:
                    suffix = ""
                elif e == a:
                    suffix = text
                else:
                    suffix = text[e - a if direct else to_index(text, e - a, enc) :]
            except OffsetError as exc:
                raise _invalid_from(exc, "replacement offset", s, e, a, b) from None
            joined = prefix + new + suffix
            st[3] = joined
            st[4] = (is_ascii and new_ascii) or joined.isascii()
            st[1] = s if s < a else a
            st[2] = (e if e > b else b) + delta
            st[5] = True
    rows: list[_PlanRow] = []
    for r, start, end, text, is_ascii, touched in states:
        size = 0
        if touched:
            if is_ascii:
                size = len(text)
            elif enc == "utf-8":
                size = end - start
            else:
                try:
                    size = units_len(text, "utf-8")
                except OffsetError as exc:
                    raise _invalid_from(exc, "region text") from None
        rows.append((r, start, end, text, is_ascii, touched, size))
    return rows


def _invalid_from(exc: OffsetError, what: str, *span: int) -> InvalidEvent:
    where = f" (replacement [{span[0]}, {span[1]}), region [{span[2]}, {span[3]}))" if span else ""
    if exc.reason == "invalid_text":
        return InvalidEvent("invalid_text", f"{what}: {exc}")
    # out_of_range cannot happen for offsets we checked against the region;
    # anything else is an offset inside a character.
    return InvalidEvent("splits_character", f"{what}{where}: {exc}")


def settle_all(
    events: Iterable[Event],
    config: TrackerConfig = TrackerConfig(),
    flush: bool = False,
    strict: bool = False,
) -> list[Outcome]:
    """Run a whole event sequence through one tracker (offline tool, tests).

    Invalid events are skipped (as the stream dead-letters them) unless
    ``strict``, which re-raises the first InvalidEvent.
    """
    tracker = Tracker(config)
    out: list[Outcome] = []
    for position, event in enumerate(events):
        try:
            out.extend(tracker.process(event, position))
        except InvalidEvent:
            if strict:
                raise
    if flush:
        out.extend(tracker.flush())
    return out
