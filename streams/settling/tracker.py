"""The region tracker: pure event-time logic that turns edits into settled examples.

No Faust, no Kafka: the stream agent feeds events in partition order and
publishes what comes back, the offline tool feeds a file. Everything it emits is
a function of the input records alone, so a replay, a crash-restart or a
different spread of buffers over partitions produces the same records.

Contract in brief (see ``Tracker`` and docs/event-time.md):

* A ``PredictionRequested`` births a region (an editable span of a buffer).
* ``BufferEdited`` replacements move regions; one that overlaps a region (or,
  under the default ``boundary="absorb"``, touches it) rewrites its text and
  restarts its quiet timer.
* Two clocks. A region's *fate* lives on its own buffer's clock (the client's
  ``time_ms``, clamped so it never runs backwards): it settles at
  ``last_edit + quiescence`` unless its TTL (``birth + ttl``) comes first (tie:
  settle). The *partition clock* runs only on trusted time: tick records and,
  where the shell passes them, Kafka record timestamps; never on an editor's
  ``time_ms``. So one client's clock cannot decide another client's data.
* A region meets its fate (a) when a later event of its own buffer has
  effective time >= fate (the buffer's events are in order, so the quiet
  period provably passed: *confirmed*), or (b) when the partition clock passes
  ``arrival of the buffer's latest event + (fate - its time) + lateness``: the
  buffer has been silent, on trusted time, for the rest of the quiet period
  plus the lateness bound (*unconfirmed*; emitted, or dropped as
  ``unconfirmed`` when configured). An event older than a region fate (b)
  already decided is counted in ``late_events``.
* Never a settled text nobody wrote: a rejected or unreadable edit drops the
  buffer's open regions (``missed_edit``); a request whose text contradicts
  what the tracker holds drops itself and the buffer's regions
  (``contradicted``); a request id seen before for the buffer is ignored
  (``redelivered_request``), with bounded memory.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Union

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
    "BoundaryRule",
    "UnconfirmedPolicy",
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
]

#: "absorb": an edit that touches a region's boundary (insertion at its start or
#: end, a deletion ending at its start) joins the region. "exclusive": only
#: edits that overlap its inside do (Zed's anchor_range_inside: start anchored
#: after, end anchored before); an empty region still absorbs an insertion at
#: its point, or it could never hold text.
BoundaryRule = Literal["absorb", "exclusive"]
#: what to do with a region whose quiet period was decided by the partition
#: clock (its own buffer never proved it): "emit" it, or "drop" it as unconfirmed
UnconfirmedPolicy = Literal["emit", "drop"]

IgnoredReason = Literal["redelivered_request"]


class InvalidEvent(ValueError):
    """An event the tracker refused; the stream dead-letters it under ``reason``.

    ``outcomes`` holds what the refusal caused: a rejected edit means the
    tracker missed an edit of that buffer, so its open regions are dropped
    (``missed_edit``), after the ones its own clock proves quiet settle. For
    every other refusal ``outcomes`` is empty and nothing in the tracker changed.
    """

    def __init__(self, reason: InvalidReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: InvalidReason = reason
        self.message = message
        self.outcomes: list[Outcome] = []


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """Timing and size knobs; all times in milliseconds."""

    #: quiet period after the last overlapping edit before a region settles (buffer clock)
    quiescence_ms: int = 10_000
    #: extra partition-clock time a silent buffer is given before its fate is decided
    lateness_ms: int = 2_000
    #: a region still being edited this long after birth is dropped ("ttl")
    ttl_ms: int = 300_000
    #: regions whose UTF-8 text exceeds this are dropped ("too_large")
    max_region_bytes: int = 4096
    boundary: BoundaryRule = "absorb"
    unconfirmed: UnconfirmedPolicy = "emit"
    #: a client clock ahead of the partition clock by more than this counts as skewed
    #: and is aligned at most this far ahead (bounds how long it can hold its regions)
    max_skew_ms: int = 60_000
    #: how long (partition clock) an idle buffer's memory (request ids, clock) is kept
    memory_ms: int = 3_600_000
    #: at most this many idle buffers are remembered (oldest forgotten first)
    max_idle_buffers: int = 100_000
    #: at most this many request ids are remembered per buffer (oldest forgotten first)
    max_request_ids: int = 1_024
    #: closed regions whose text is still followed through later edits, per buffer, so a
    #: request from a stale snapshot of text that already settled is caught too
    shadow_regions: int = 2

    def __post_init__(self) -> None:
        # Deadlines must lie strictly after the event that set them, or the
        # same-buffer rule would fire a region before the event that created it.
        if self.quiescence_ms <= 0 or self.ttl_ms <= 0:
            raise ValueError("quiescence_ms and ttl_ms must be > 0")
        if self.lateness_ms < 0 or self.max_region_bytes < 0 or self.max_skew_ms < 0:
            raise ValueError("lateness_ms, max_skew_ms and max_region_bytes must be >= 0")
        if self.memory_ms < 0 or self.max_idle_buffers < 0 or self.max_request_ids < 1 or self.shadow_regions < 0:
            raise ValueError("memory bounds must be >= 0 (max_request_ids >= 1)")
        if self.boundary not in ("absorb", "exclusive"):
            raise ValueError(f"boundary must be 'absorb' or 'exclusive', not {self.boundary!r}")
        if self.unconfirmed not in ("emit", "drop"):
            raise ValueError(f"unconfirmed must be 'emit' or 'drop', not {self.unconfirmed!r}")


@dataclass(frozen=True, slots=True)
class Dropped:
    """A region that will never become an example, and why (for metrics and audit)."""

    region_id: str
    request_id: str
    reason: DropReason
    #: expiry (birth + ttl) for "ttl", the deadline for "unconfirmed"; the
    #: dropping event's effective time otherwise
    at_ms: int
    session_id: str
    path: str


Outcome = Union[SettledExample, Dropped]


@dataclass(slots=True)
class TrackerStats:
    """Counters the streaming layer exports as metrics."""

    #: events accepted (ticks included; invalid and ignored ones are not counted here)
    events: int = 0
    #: buffer events older than a fate the partition clock already decided for their buffer
    late_events: int = 0
    #: buffer events whose client clock ran ahead of the partition clock by more than max_skew_ms
    skewed_events: int = 0
    #: regions created from consenting, valid requests (too-large ones included)
    regions_born: int = 0
    settled: int = 0
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
    ignored_by_reason: dict[str, int] = field(default_factory=dict)
    #: idle buffers forgotten to keep memory bounded
    buffers_forgotten: int = 0


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
        "queued",
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
    #: min(settle deadline, expiry), on the buffer's clock
    fate_ms: int
    #: partition-clock time of this region's authoritative heap entry
    queued: int
    origins: dict[str, int] | None
    edit_count: int


class _Shadow:
    """What is left of a closed region: its span and text, followed through later edits."""

    __slots__ = ("start", "end", "text", "ascii")

    def __init__(self, start: int, end: int, text: str, is_ascii: bool) -> None:
        self.start = start
        self.end = end
        self.text = text
        self.ascii = is_ascii


class _Buffer:
    """Per-buffer state: open regions, its clock, and bounded memory while idle."""

    __slots__ = (
        "key", "encoding", "regions", "shadows", "shadow_log", "last_ms", "arrival_ms", "decided_until", "seen",
        "seen_order",
    )

    def __init__(self, key: tuple[str, str], encoding: OffsetEncoding, last_ms: int, arrival_ms: int) -> None:
        self.key = key
        self.encoding = encoding
        #: open regions by request_id
        self.regions: dict[str, _Region] = {}
        #: closed regions still followed through edits (text known, nothing emitted from them)
        self.shadows: list[_Shadow] = []
        #: edits not yet applied to the shadows (applied when a request needs them: requests are rare)
        self.shadow_log: list[list[Replacement]] = []
        #: effective time of the latest event (the client clock, clamped to never run back)
        self.last_ms = last_ms
        #: that event's arrival on the partition clock (aligned, see Tracker._align)
        self.arrival_ms = arrival_ms
        #: largest fate the partition clock decided for this buffer; older events are late
        self.decided_until = -1
        #: request ids seen (bounded; oldest forgotten first)
        self.seen: set[str] = set()
        self.seen_order: deque[str] = deque()


def _outcome_order(o: Outcome) -> tuple[int, str]:
    if type(o) is Dropped:
        return (o.at_ms, o.region_id)
    return (o.settled_at_ms, o.id)  # type: ignore[union-attr]


class Tracker:
    """Tracks open regions of the buffers of one partition (or of a whole file).

    ``process`` validates an event before changing anything: an invalid
    request raises InvalidEvent and leaves the tracker as it was; an invalid
    edit raises too, after dropping its buffer's open regions (see
    InvalidEvent.outcomes). ``advance_clock`` moves the partition clock on a
    trusted timestamp (the Kafka record's, when the deployment stamps it at
    ingest); ticks move it too.
    """

    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:
        self.config = config
        self.stats = TrackerStats()
        self._buffers: dict[tuple[str, str], _Buffer] = {}
        #: buffers with no open region, oldest first, with the partition clock when they went idle
        self._idle: OrderedDict[tuple[str, str], int | None] = OrderedDict()
        #: open regions by serial (serials are never reused, request ids may be)
        self._live: dict[int, _Region] = {}
        #: (partition-clock time, region id, serial); entries not equal to region.queued are stale
        self._deadlines: list[tuple[int, str, int]] = []
        #: (birth position, serial) of regions born with a position
        self._positions: list[tuple[int, int]] = []
        #: the partition clock: largest trusted time seen (ticks, record timestamps)
        self._clock: int | None = None
        self._serial = 0

    # -- queries -------------------------------------------------------------

    @property
    def clock_ms(self) -> int | None:
        """The partition clock (largest trusted time seen); None before the first."""
        return self._clock

    @property
    def watermark_ms(self) -> int | None:
        """Partition clock minus lateness; None before the first trusted time."""
        return None if self._clock is None else self._clock - self.config.lateness_ms

    def open_regions(self) -> int:
        return len(self._live)

    def remembered_buffers(self) -> int:
        """Buffers with state (open or idle); bounded by max_idle_buffers + open ones."""
        return len(self._buffers)

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
                self.stats.events += 1
                return self.advance_clock(event.time_ms)  # type: ignore[union-attr]
            if isinstance(event, BufferEdited):
                return self._edited(event)
            if isinstance(event, PredictionRequested):
                return self._requested(event, position)
            if isinstance(event, Tick):
                self.stats.events += 1
                return self.advance_clock(event.time_ms)
        except InvalidEvent as exc:
            counts = self.stats.invalid_by_reason
            counts[exc.reason] = counts.get(exc.reason, 0) + 1
            raise
        raise TypeError(f"not an event: {type(event).__name__}")

    def advance_clock(self, time_ms: int) -> list[Outcome]:
        """Move the partition clock to a trusted time (a tick, a record timestamp).

        Fires every region whose buffer has been silent long enough on this clock.
        """
        clock = self._clock
        if clock is not None and time_ms <= clock:
            return []
        self._clock = time_ms
        out: list[Outcome] = []
        heap = self._deadlines
        if heap and heap[0][0] <= time_ms:
            self._fire_until(time_ms, out)
            if len(out) > 1:
                out.sort(key=_outcome_order)
        self._forget_idle()
        return out

    def missed(self, session_id: str, path: str, time_ms: int | None = None) -> list[Outcome]:
        """A record of this buffer could not be read: its open regions can no longer be vouched for.

        The stream calls this for a value it could not decode (too large,
        malformed) whose buffer it can still tell. When its time is readable,
        regions that time proves quiet settle first and the buffer's clock
        moves as for any of its events. The buffer re-anchors on its next request.
        """
        key = (session_id, path)
        buf = self._buffers.get(key)
        out: list[Outcome] = []
        if buf is None:
            if time_ms is not None:
                buf = self._buffers[key] = _Buffer(key, "utf-16", time_ms, self._align(time_ms))
                self._went_idle(buf)
            return out
        t = buf.last_ms if time_ms is None or time_ms < buf.last_ms else time_ms
        if time_ms is not None:
            self._fire_buffer(buf, t, out)
        self._drop_buffer(buf, "missed_edit", t, out)
        out.sort(key=_outcome_order)
        if time_ms is not None:
            buf.last_ms = t
            buf.arrival_ms = self._align(t)
        return out

    def flush(self) -> list[Outcome]:
        """End of input: every open region meets its own fate (settle or ttl).

        A finished input holds every edit there is, so these count as confirmed.
        """
        out: list[Outcome] = []
        for region in list(self._live.values()):
            self._fire(region, out, True)
        self._deadlines.clear()
        self._positions.clear()
        if len(out) > 1:
            out.sort(key=_outcome_order)
        return out

    # -- event kinds ---------------------------------------------------------

    def _align(self, t: int) -> int:
        """Arrival of a buffer event at client time t, on the partition clock.

        It arrived after every trusted time seen so far, so no earlier than the
        clock; a client clock ahead of the clock is believed up to max_skew_ms
        (later, hence safer: it only delays its own regions' fate).
        """
        clock = self._clock
        if clock is None:
            return t
        if t <= clock:
            return clock
        cap = clock + self.config.max_skew_ms
        if t > cap:
            self.stats.skewed_events += 1
            return cap
        return t

    def _edited(self, ev: BufferEdited) -> list[Outcome]:
        key = (ev.session_id, ev.path)
        buf = self._buffers.get(key)
        t = ev.time_ms
        if buf is not None and buf.last_ms > t:
            t = buf.last_ms
        if not ev.consent:
            return self._no_consent(ev, key, buf, t)

        plan = None
        survivors: list[_Region] = []
        try:
            for rep in ev.replacements:
                if rep.start > rep.end:
                    raise InvalidEvent(
                        "replacement_reversed", f"replacement start {rep.start} > end {rep.end}"
                    )
            if buf is not None and buf.regions:
                survivors = [r for r in buf.regions.values() if r.fate_ms > t]
                if survivors:
                    if ev.encoding != buf.encoding:
                        raise InvalidEvent(
                            "encoding_mismatch",
                            f"event uses {ev.encoding}, buffer's open regions use {buf.encoding}",
                        )
                    plan = _plan_edit(survivors, ev.replacements, buf.encoding, self.config.boundary == "absorb")
        except InvalidEvent as exc:
            # A missed edit: what its own clock proves quiet settles, the rest
            # can no longer be vouched for. Its time still happened to the buffer.
            if buf is None:
                buf = self._buffers[key] = _Buffer(key, ev.encoding, t, self._align(t))
                self._went_idle(buf)
            else:
                out = exc.outcomes
                self._fire_buffer(buf, t, out)
                self._drop_buffer(buf, "missed_edit", t, out)
                out.sort(key=_outcome_order)
                buf.last_ms = t
                buf.arrival_ms = self._align(t)
            raise

        # -- valid: commit --
        self.stats.events += 1
        if buf is None:
            # No region to move, but its clock starts here: a request after a clock
            # step back is clamped to this edit's time, as the buffer's own history says.
            buf = self._buffers[key] = _Buffer(key, ev.encoding, t, self._align(t))
            self._went_idle(buf)
            return []
        out: list[Outcome] = []
        if t < buf.decided_until:
            self.stats.late_events += 1
        self._fire_buffer(buf, t, out)
        buf.last_ms = t
        buf.arrival_ms = arrival = self._align(t)
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
        if buf.regions:
            self._requeue(buf, t, arrival)
        if buf.shadows:  # (regions due before this edit are shadows now: it applies to them too)
            if ev.encoding != buf.encoding or len(buf.shadow_log) >= _MAX_SHADOW_LOG:
                buf.shadows.clear()
                buf.shadow_log.clear()
            else:
                buf.shadow_log.append(ev.replacements)
        if len(out) > 1:
            out.sort(key=_outcome_order)
        return out

    def _requested(self, ev: PredictionRequested, position: int | None) -> list[Outcome]:
        key = (ev.session_id, ev.path)
        buf = self._buffers.get(key)
        t = ev.time_ms
        if buf is not None and buf.last_ms > t:
            t = buf.last_ms
        if not ev.consent:
            return self._no_consent(ev, key, buf, t)
        if buf is not None and (ev.request_id in buf.seen or ev.request_id in buf.regions):
            # At-least-once producers and retried posts redeliver: the first copy decided.
            # (An id still open counts even when the bounded memory of ids forgot it:
            # a second region under the same key would corrupt the buffer's bookkeeping.)
            counts = self.stats.ignored_by_reason
            counts["redelivered_request"] = counts.get("redelivered_request", 0) + 1
            return []

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
        known: list[_Region | _Shadow] = []
        if buf is not None and (buf.regions or buf.shadows):
            if enc != buf.encoding:
                if any(r.fate_ms > t for r in buf.regions.values()):
                    raise InvalidEvent(
                        "encoding_mismatch",
                        f"event uses {enc}, buffer's open regions use {buf.encoding}",
                    )
            else:
                self._materialize(buf)
                known = [*buf.regions.values(), *buf.shadows]

        # -- valid: commit --
        self.stats.events += 1
        self.stats.regions_born += 1
        out: list[Outcome] = []
        arrival = self._align(t)
        if buf is None:
            buf = self._buffers[key] = _Buffer(key, enc, t, arrival)
        else:
            if t < buf.decided_until:
                self.stats.late_events += 1
            self._fire_buffer(buf, t, out)
            buf.last_ms = t
            buf.arrival_ms = arrival
        self._remember(buf, ev.request_id)
        rid = region_id(ev.session_id, ev.path, ev.request_id)
        if known and _contradicts(start, end, text, is_ascii, known, enc):
            # The request's snapshot and the tracker disagree about the same text:
            # one of them missed an edit, and nothing says which.
            self._drop_buffer(buf, "contradicted", t, out)
            self._count_drop("contradicted")
            out.append(Dropped(rid, ev.request_id, "contradicted", t, ev.session_id, ev.path))
        elif size > self.config.max_region_bytes:
            self._count_drop("too_large")
            out.append(Dropped(rid, ev.request_id, "too_large", t, ev.session_id, ev.path))
        else:
            if not buf.regions:
                if buf.encoding != enc:
                    buf.shadows.clear()
                    buf.shadow_log.clear()
                buf.encoding = enc
                self._idle.pop(key, None)
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
            r.queued = 1 << 62
            r.origins = None
            r.edit_count = 0
            buf.regions[ev.request_id] = r
            self._live[serial] = r
            if position is not None:
                heapq.heappush(self._positions, (position, serial))
        if buf.regions:
            self._requeue(buf, t, arrival)
        else:
            self._went_idle(buf)
        if len(out) > 1:
            out.sort(key=_outcome_order)
        return out

    def _no_consent(
        self,
        ev: PredictionRequested | BufferEdited,
        key: tuple[str, str],
        buf: _Buffer | None,
        t: int,
    ) -> list[Outcome]:
        # Regions whose quiet period ended before this event settle first (the
        # user consented then); everything still open is dropped. Content of a
        # non-consenting event is never looked at, so it cannot be invalid.
        self.stats.events += 1
        out: list[Outcome] = []
        if buf is not None:
            if t < buf.decided_until:
                self.stats.late_events += 1
            self._fire_buffer(buf, t, out)
            self._drop_buffer(buf, "no_consent", t, out)
            buf.last_ms = t
            buf.arrival_ms = self._align(t)
        if type(ev) is PredictionRequested or isinstance(ev, PredictionRequested):
            self._count_drop("no_consent")
            rid = region_id(ev.session_id, ev.path, ev.request_id)
            out.append(Dropped(rid, ev.request_id, "no_consent", t, ev.session_id, ev.path))
        if len(out) > 1:
            out.sort(key=_outcome_order)
        return out

    # -- internals -----------------------------------------------------------

    def _remember(self, buf: _Buffer, request_id: str) -> None:
        seen, order = buf.seen, buf.seen_order
        seen.add(request_id)
        order.append(request_id)
        if len(order) > self.config.max_request_ids:
            seen.discard(order.popleft())

    def _requeue(self, buf: _Buffer, t: int, arrival: int) -> None:
        """Queue each open region of ``buf`` at the partition-clock time its fate is decided."""
        base = arrival - t + self.config.lateness_ms
        heap = self._deadlines
        for r in buf.regions.values():
            at = base + r.fate_ms
            if at < r.queued:
                r.queued = at
                heapq.heappush(heap, (at, r.rid, r.serial))

    def _fire_until(self, clock: int, out: list[Outcome]) -> None:
        heap, live = self._deadlines, self._live
        lateness = self.config.lateness_ms
        while heap and heap[0][0] <= clock:
            at, rid, serial = heapq.heappop(heap)
            region = live.get(serial)
            if region is None or region.queued != at:
                continue  # superseded by an earlier entry
            buf = region.buffer
            due = buf.arrival_ms - buf.last_ms + lateness + region.fate_ms
            if due > at:
                # Its buffer spoke (or it was edited) since: queue it where it is due now.
                region.queued = due
                heapq.heappush(heap, (due, rid, serial))
                continue
            if region.fate_ms > buf.decided_until:
                buf.decided_until = region.fate_ms
            self._fire(region, out, False)

    def _fire_buffer(self, buf: _Buffer, t: int, out: list[Outcome]) -> None:
        """A later event of the same buffer proves quiet periods ending <= t passed."""
        if not buf.regions:
            return
        due = [r for r in buf.regions.values() if r.fate_ms <= t]
        for region in due:
            self._fire(region, out, True)

    def _drop_buffer(self, buf: _Buffer, reason: DropReason, t: int, out: list[Outcome]) -> None:
        """Drop every open region; the buffer's text is no longer known (shadows go too)."""
        buf.shadows.clear()
        buf.shadow_log.clear()
        for region in list(buf.regions.values()):
            self._remove(region)
            out.append(self._drop(region, reason, t))

    def _remove(self, region: _Region) -> None:
        del self._live[region.serial]
        buf = region.buffer
        del buf.regions[region.request.request_id]
        if not buf.regions:
            self._went_idle(buf)

    def _went_idle(self, buf: _Buffer) -> None:
        idle = self._idle
        idle[buf.key] = self._clock
        idle.move_to_end(buf.key)
        if len(idle) > self.config.max_idle_buffers:
            self._forget(next(iter(idle)))

    def _forget_idle(self) -> None:
        """Forget idle buffers older than memory_ms on the partition clock (bounded memory)."""
        idle, clock = self._idle, self._clock
        if not idle or clock is None:
            return
        horizon = clock - self.config.memory_ms
        while idle:
            key, since = next(iter(idle.items()))
            if since is not None and since > horizon:
                break
            self._forget(key)

    def _forget(self, key: tuple[str, str]) -> None:
        del self._idle[key]
        del self._buffers[key]
        self.stats.buffers_forgotten += 1

    def _fire(self, region: _Region, out: list[Outcome], confirmed: bool) -> None:
        self._remove(region)
        limit = self.config.shadow_regions
        if limit:
            buf = region.buffer
            if buf.shadow_log:
                self._materialize(buf)
            shadows = buf.shadows
            shadows.append(_Shadow(region.start, region.end, region.text, region.ascii))
            if len(shadows) > limit:
                del shadows[0]
        settle_ms = region.last_edit_ms + self.config.quiescence_ms
        if settle_ms > region.expire_ms:
            out.append(self._drop(region, "ttl", region.expire_ms))
        elif not confirmed and self.config.unconfirmed == "drop":
            out.append(self._drop(region, "unconfirmed", settle_ms))
        else:
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

    def _materialize(self, buf: _Buffer) -> None:
        """Apply the edits logged since the shadows were last brought up to date.

        An edit that cannot be applied to them (it splits one of their
        characters) means that text is no longer known: the shadows go.
        """
        log, shadows = buf.shadow_log, buf.shadows
        if not log:
            return
        if shadows:
            absorb = self.config.boundary == "absorb"
            cap = self.config.max_region_bytes
            try:
                for reps in log:
                    for r, start, end, text, is_ascii, touched, size in _plan_edit(shadows, reps, buf.encoding, absorb):
                        r.start, r.end, r.text, r.ascii = start, end, text, is_ascii
                        if touched and size > cap:
                            shadows.remove(r)
                    if not shadows:
                        break
            except InvalidEvent:
                shadows.clear()
        log.clear()

    def _count_drop(self, reason: DropReason) -> None:
        counts = self.stats.dropped_by_reason
        counts[reason] = counts.get(reason, 0) + 1

    def _drop(self, region: _Region, reason: DropReason, at_ms: int) -> Dropped:
        self._count_drop(reason)
        ev = region.request
        return Dropped(region.rid, ev.request_id, reason, at_ms, ev.session_id, ev.path)


def _contradicts(
    start: int, end: int, text: str, is_ascii: bool, survivors: list[_Region | _Shadow], enc: OffsetEncoding
) -> bool:
    """Whether a request's text disagrees with an open region's text where their spans overlap."""
    for r in survivors:
        lo = start if start > r.start else r.start
        hi = end if end < r.end else r.end
        if lo >= hi:
            continue
        try:
            if (is_ascii and r.ascii) or enc == "utf-32":
                mine = text[lo - start : hi - start]
                theirs = r.text[lo - r.start : hi - r.start]
            else:
                mine = text[to_index(text, lo - start, enc) : to_index(text, hi - start, enc)]
                theirs = r.text[to_index(r.text, lo - r.start, enc) : to_index(r.text, hi - r.start, enc)]
        except OffsetError:
            return True  # a character boundary in one text is inside a character of the other
        if mine != theirs:
            return True
    return False


_PlanRow = tuple[Any, int, int, str, bool, bool, int]  # (_Region or _Shadow, ...)
#: edits logged for a buffer's shadows before they are dropped rather than followed further
_MAX_SHADOW_LOG = 256


def _plan_edit(
    survivors: list[_Region] | list[_Shadow], reps: list[Replacement], enc: OffsetEncoding, absorb: bool = True
) -> list[_PlanRow]:
    """Compute every survivor's span and text after ``reps`` without touching it.

    Raises InvalidEvent, so a bad replacement anywhere in the event leaves all
    regions as they were. Rows: (region, start, end, text, ascii, touched, utf8 size).
    ``absorb``: an edit touching a boundary joins the region (else it stays outside).
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
            if not absorb and s == b and a < b:
                continue  # starts at the end of a non-empty region: outside
            if delta is None:
                new_ascii = new.isascii()
                try:
                    n = len(new) if new_ascii or utf32 else units_len(new, enc)
                except OffsetError as exc:
                    raise _invalid_from(exc, "replacement text") from None
                delta = n - (e - s)
            if e < a or (not absorb and e == a and (a < b or s < e)):
                # Before the region (or, exclusive, ending at its start; an empty
                # region still absorbs an insertion at its point).
                st[1] = a + delta
                st[2] = b + delta
                continue
            if not absorb and a == b and s == a and e > a:
                continue  # a deletion starting at an empty region's point: outside
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

    Invalid events are skipped (as the stream dead-letters them; what their
    refusal caused is kept) unless ``strict``, which re-raises the first one.
    """
    tracker = Tracker(config)
    out: list[Outcome] = []
    for position, event in enumerate(events):
        try:
            out.extend(tracker.process(event, position))
        except InvalidEvent as exc:
            if strict:
                raise
            out.extend(exc.outcomes)
    if flush:
        out.extend(tracker.flush())
    return out
