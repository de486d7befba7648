"""A partition's settle state as bytes, and back: what lets a worker commit past open regions.

Without checkpoints the stream may only commit up to the oldest open region's
birth, so it must hold every record after it (up to the 5-minute TTL) and a
crash replays all of them. With a checkpoint of the whole
:class:`~settle.streams.settling.partition.PartitionSettler` taken at a record
boundary, the commit point is the checkpoint's offset: a replacement worker
restores the state and re-reads only what came after it. The restored settler
is the same state, not an approximation: replaying the rest of the partition
from it gives byte-identical outputs to a worker that never stopped (tested on
simulated and adversarial streams). That includes what a restart from the oldest
open birth used to forget: request ids already seen, decided fates of idle
buffers, shadows of closed regions and the safety caps' counts.

Format: zlib-compressed msgpack of :class:`SettlerState`, prefixed with
:data:`MAGIC` and a version byte. Everything is typed msgspec data (no pickle),
so a corrupt or foreign checkpoint raises :class:`CheckpointError`, never
runs code. Pure: no Kafka here (see ``streams/kafka/checkpoints.py``).
"""

from __future__ import annotations

import zlib
from collections import Counter, OrderedDict, deque
from typing import TYPE_CHECKING, Any

import msgspec

from settle.schemas.events import OffsetEncoding, PredictionRequested, Replacement
from settle.streams.settling.tracker import Tracker, TrackerConfig, TrackerStats, _Buffer, _Region, _Shadow

if TYPE_CHECKING:  # partition.py imports this module
    from settle.streams.settling.partition import PartitionSettler

__all__ = ["MAGIC", "VERSION", "CheckpointError", "SettlerState", "dumps", "loads", "capture", "rebuild"]

MAGIC = b"STCK"
VERSION = 1


class CheckpointError(ValueError):
    """Bytes that are not a checkpoint this version can restore."""


class RegionState(msgspec.Struct, array_like=True):
    serial: int
    rid: str
    request: PredictionRequested
    start: int
    end: int
    text: str
    ascii: bool
    cursor_cp: int
    birth_ms: int
    last_edit_ms: int
    expire_ms: int
    fate_ms: int
    queued: int
    origins: dict[str, int] | None
    edit_count: int


class ShadowState(msgspec.Struct, array_like=True):
    start: int
    end: int
    text: str
    ascii: bool


class BufferState(msgspec.Struct, array_like=True):
    session_id: str
    path: str
    encoding: OffsetEncoding
    #: in the buffer's insertion (birth) order
    regions: list[RegionState]
    shadows: list[ShadowState]
    shadow_log: list[list[Replacement]]
    last_ms: int
    arrival_ms: int
    decided_until: int
    seen: list[str]
    seen_order: list[str]


class TrackerState(msgspec.Struct):
    #: in the tracker's dict order
    buffers: list[BufferState]
    #: idle buffers, oldest first: (session_id, path, partition clock when it went idle)
    idle: list[tuple[str, str, int | None]]
    #: heap lists kept in heap order, stale entries included
    deadlines: list[tuple[int, str, int]]
    positions: list[tuple[int, int]]
    clock: int | None
    serial: int
    stats: TrackerStats


class SettlerState(msgspec.Struct):
    """Everything a :class:`PartitionSettler` carries from one record to the next."""

    partition: int
    #: the first source offset not reflected in this state
    next_offset: int | None
    tracker: TrackerState
    dropped: dict[str, int]
    dead_letters: dict[str, int]
    safety_dropped: dict[str, int]
    safety_scrubbed: dict[str, int]
    #: the caps' window counts, oldest first: (kind, key, window, count)
    safety_counts: list[tuple[str, str, int, int]]
    #: the tracker config it ran under (restoring under another one is allowed, and logged by the caller)
    config: dict[str, Any]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SettlerState)


# --------------------------------------------------------------------------- tracker


def capture_tracker(tracker: Tracker) -> TrackerState:
    """The tracker's full state (reads its internals: this module is the tracker's own serialiser)."""
    buffers = []
    for (session_id, path), buf in tracker._buffers.items():
        regions = [
            RegionState(
                r.serial, r.rid, r.request, r.start, r.end, r.text, r.ascii, r.cursor_cp, r.birth_ms,
                r.last_edit_ms, r.expire_ms, r.fate_ms, r.queued, dict(r.origins) if r.origins is not None else None,
                r.edit_count,
            )
            for r in buf.regions.values()
        ]
        buffers.append(BufferState(
            session_id, path, buf.encoding, regions,
            [ShadowState(s.start, s.end, s.text, s.ascii) for s in buf.shadows],
            [list(reps) for reps in buf.shadow_log],
            buf.last_ms, buf.arrival_ms, buf.decided_until, sorted(buf.seen), list(buf.seen_order),
        ))
    return TrackerState(
        buffers=buffers,
        idle=[(k[0], k[1], since) for k, since in tracker._idle.items()],
        deadlines=list(tracker._deadlines),
        positions=list(tracker._positions),
        clock=tracker._clock,
        serial=tracker._serial,
        stats=msgspec.convert(msgspec.to_builtins(tracker.stats), TrackerStats),
    )


def rebuild_tracker(state: TrackerState, config: TrackerConfig) -> Tracker:
    """A tracker in exactly the captured state, running under ``config``."""
    tracker = Tracker(config)
    live: dict[int, _Region] = {}
    for b in state.buffers:
        key = (b.session_id, b.path)
        buf = _Buffer(key, b.encoding, b.last_ms, b.arrival_ms)
        buf.decided_until = b.decided_until
        buf.seen = set(b.seen)
        buf.seen_order = deque(b.seen_order)
        buf.shadows = [_Shadow(s.start, s.end, s.text, s.ascii) for s in b.shadows]
        buf.shadow_log = [list(reps) for reps in b.shadow_log]
        for rs in b.regions:
            r = _Region()
            r.serial, r.rid, r.request, r.buffer = rs.serial, rs.rid, rs.request, buf
            r.start, r.end, r.text, r.ascii, r.cursor_cp = rs.start, rs.end, rs.text, rs.ascii, rs.cursor_cp
            r.birth_ms, r.last_edit_ms, r.expire_ms = rs.birth_ms, rs.last_edit_ms, rs.expire_ms
            r.fate_ms, r.queued, r.origins, r.edit_count = rs.fate_ms, rs.queued, rs.origins, rs.edit_count
            if rs.request.request_id in buf.regions:
                raise CheckpointError(f"request {rs.request.request_id!r} appears twice in buffer {key!r}")
            buf.regions[rs.request.request_id] = r
            live[rs.serial] = r
        tracker._buffers[key] = buf
    for session_id, path, since in state.idle:
        if (session_id, path) not in tracker._buffers:
            raise CheckpointError(f"idle buffer {(session_id, path)!r} has no state")
        tracker._idle[(session_id, path)] = since
    # _live is in birth (serial) order, as the tracker inserts it
    tracker._live = dict(sorted(live.items()))
    tracker._deadlines = [tuple(x) for x in state.deadlines]  # type: ignore[misc]
    tracker._positions = [tuple(x) for x in state.positions]  # type: ignore[misc]
    tracker._clock = state.clock
    tracker._serial = state.serial
    tracker.stats = msgspec.convert(msgspec.to_builtins(state.stats), TrackerStats)
    return tracker


# --------------------------------------------------------------------------- settler


def capture(settler: PartitionSettler) -> SettlerState:
    """The state of a :class:`~settle.streams.settling.partition.PartitionSettler`."""
    safety = settler.safety
    return SettlerState(
        partition=settler.partition,
        next_offset=settler.next_offset,
        tracker=capture_tracker(settler.tracker),
        dropped=dict(settler.dropped),
        dead_letters=dict(settler.dead_letters),
        safety_dropped=dict(safety.dropped),
        safety_scrubbed=dict(safety.scrubbed),
        safety_counts=[(kind, key, window, n) for (kind, key, window), n in safety._counts.items()],
        config=msgspec.to_builtins(settler.config),
    )


def rebuild(state: SettlerState, settler: PartitionSettler) -> PartitionSettler:
    """Load ``state`` into a freshly made settler (its config, topic and policy are the caller's)."""
    if state.partition != settler.partition:
        raise CheckpointError(f"checkpoint of partition {state.partition} offered to partition {settler.partition}")
    settler.tracker = rebuild_tracker(state.tracker, settler.config)
    settler.next_offset = state.next_offset
    settler.dropped = dict(state.dropped)
    settler.dead_letters = dict(state.dead_letters)
    settler.safety.dropped = Counter(state.safety_dropped)
    settler.safety.scrubbed = Counter(state.safety_scrubbed)
    settler.safety._counts = OrderedDict(((kind, key, window), n) for kind, key, window, n in state.safety_counts)
    return settler


def dumps(state: SettlerState) -> bytes:
    """``MAGIC + version + zlib(msgpack(state))``."""
    return MAGIC + bytes([VERSION]) + zlib.compress(_encoder.encode(state), 1)


def loads(data: bytes) -> SettlerState:
    """Inverse of :func:`dumps`; raises CheckpointError on anything else."""
    if data[:4] != MAGIC:
        raise CheckpointError("not a settle checkpoint (bad magic)")
    if len(data) < 5 or data[4] != VERSION:
        raise CheckpointError(f"checkpoint version {data[4] if len(data) > 4 else None} is not {VERSION}")
    try:
        return _decoder.decode(zlib.decompress(data[5:]))
    except (zlib.error, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CheckpointError(f"corrupt checkpoint: {exc}") from None
