"""Settling a bounded span of one `edits` partition, for backfills (`settle replay`).

Free of Kafka: the replay loop hands every record here, as the live agent hands
them to :class:`PartitionSettler`, and produces what comes back.

Boundary rule (what a replay of the span ``[start, end)`` emits)
---------------------------------------------------------------

* A settled example is emitted **iff the record that births its region (its
  ``prediction_requested``) lies at an offset in ``[start, end)``** of its
  partition. Regions born before ``start`` or at/after ``end`` are tracked (so
  the watermark and every buffer's state are what the live worker had) but
  never emitted; a dead letter is emitted iff its source record is in the span.
* Reading starts at a *warm-up* offset ``warm <= start`` (by default the first
  record whose Kafka timestamp is :func:`default_warmup_ms` before the span's
  first record: ``ttl + quiescence + lateness (+ max skew)``, or the tracker's
  idle-buffer memory if longer), so the tracker enters the span with the
  regions, buffer memory and partition clock the live worker held. Regions
  decide within that time, so a region born in the span cannot depend on
  anything older.
* Reading goes on past ``end`` until every region born before ``end`` has
  settled or been dropped (more `edits`, ticks included, move the watermark
  exactly as they moved the live worker's). If the topic ends first, those
  regions stay undecided and are counted, not emitted: the live run had not
  settled them either.

What the settle worker does after tracking (its safety pass: secret scrubbing,
excluded paths, per-source caps) runs here too, with the worker's settings. Its
caps count per worker (a restarted live worker starts them afresh), so they
count here from the warm-up on: a replay can differ from the live run only where
a source hit its cap in the window around the span's start.

For regions inside the span this yields, byte for byte, what the live worker
produced, because both run the same tracker over the same records from a point
where no older state matters (the live worker itself restarts from its committed
offset, the oldest open birth, by the same argument). Equality can fail only for
a region whose buffer's state reaches back past the warm-up (a region kept open
past its TTL because the partition's event time stood still): pass a longer
``--warmup``, or replay from the beginning, which is always exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from settle.schemas.codecs import sniff_format
from settle.streams.settling.partition import Output, PartitionSettler
from settle.streams.settling.safety import SafetyPolicy
from settle.streams.settling.tracker import TrackerConfig, region_id


class _Birth(msgspec.Struct):
    """Just enough of an event to know which region it births (other fields ignored)."""

    kind: str = ""
    session_id: str = ""
    path: str = ""
    request_id: str = ""


_json_birth = msgspec.json.Decoder(_Birth)
_msgpack_birth = msgspec.msgpack.Decoder(_Birth)


def birth_id(raw: bytes | None) -> str | None:
    """Example id of the region a raw `prediction_requested` value births; None for anything else."""
    if not raw:
        return None
    try:
        b = _json_birth.decode(raw) if sniff_format(raw) == "json" else _msgpack_birth.decode(raw)
    except msgspec.DecodeError:
        return None
    if b.kind != "prediction_requested" or not (b.session_id and b.path and b.request_id):
        return None
    return region_id(b.session_id, b.path, b.request_id)


@dataclass
class SpanSettler:
    """One partition's settler, emitting only what the boundary rule assigns to ``[start, end)``."""

    partition: int
    start: int
    #: exclusive; None = open-ended (up to wherever the topic ends)
    end: int | None = None
    config: TrackerConfig = field(default_factory=TrackerConfig)
    source_topic: str = "edits"
    agent: str = "settle"
    #: run the partition clock on record timestamps, as the live worker does under the same setting
    record_time: bool = False
    #: what an example must pass before `settled`, as the live worker applies it
    safety_policy: SafetyPolicy = field(default_factory=SafetyPolicy)
    settler: PartitionSettler = field(init=False)
    #: ids of regions born outside the span: tracked, never emitted
    outside: set[str] = field(default_factory=set, init=False)
    suppressed: int = field(default=0, init=False)
    records: int = field(default=0, init=False)
    in_span: int = field(default=0, init=False)
    emitted: dict[str, int] = field(default_factory=dict, init=False)
    last_offset: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.settler = PartitionSettler(self.partition, self.config, source_topic=self.source_topic,
                                        agent=self.agent, record_time=self.record_time,
                                        safety_policy=self.safety_policy)

    def in_range(self, offset: int) -> bool:
        return offset >= self.start and (self.end is None or offset < self.end)

    def handle(self, offset: int, key: bytes | None, value: bytes | None,
               timestamp_ms: int | None = None) -> list[Output]:
        """Apply one record (warm-up, span or tail); returns the outputs the span owns."""
        self.records += 1
        self.last_offset = offset
        inside = self.in_range(offset)
        if inside:
            self.in_span += 1
        else:
            rid = birth_id(value)
            if rid is not None:
                self.outside.add(rid)
        outs = self.settler.handle(offset, key, value, timestamp_ms)
        kept: list[Output] = []
        for out in outs:
            if out.topic == "settled":
                if out.key is not None and out.key.decode() in self.outside:
                    self.suppressed += 1
                    continue
            elif not inside:  # a dead letter belongs to the span its source record is in
                continue
            self.emitted[out.topic] = self.emitted.get(out.topic, 0) + 1
            kept.append(out)
        return kept

    def past_end(self) -> bool:
        return self.end is not None and self.last_offset is not None and self.last_offset + 1 >= self.end

    def done(self) -> bool:
        """Past the span and every region born before its end decided: nothing more to emit."""
        if self.end is None:
            return False
        if not self.past_end():
            return False
        oldest = self.settler.tracker.oldest_open_birth_position()
        return oldest is None or oldest >= self.end

    def undecided(self) -> int:
        """Regions still open (not emitted: the live run had not settled them at this point either)."""
        return self.settler.tracker.open_regions()


def default_warmup_ms(config: TrackerConfig) -> int:
    """Warm-up that rebuilds everything the tracker remembers at the span's start.

    A region decides within ttl + quiescence + lateness (+ the clock skew the
    tracker tolerates) of its birth; an idle buffer's memory (request ids, clock)
    lasts ``memory_ms`` where the tracker keeps one.
    """
    decide = config.ttl_ms + config.quiescence_ms + config.lateness_ms + getattr(config, "max_skew_ms", 0)
    return max(decide, getattr(config, "memory_ms", 0))
