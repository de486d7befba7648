"""One partition's settle logic, free of Faust and Kafka.

The Faust agent hands each record here and sends back what comes out. The
offline reference and the benchmark drive the same decoder and Tracker; this
adds only what a stream needs on top: dead-letter records and the offset a
replacement worker must restart from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from settle.schemas.codecs import InvalidRecord, buffer_of, decode_event, encode
from settle.schemas.events import Tick
from settle.schemas.examples import SettledExample
from settle.streams.records import Consumed, Output, dead_letter
from settle.streams.scoring.kept_rate import with_production_kept_rate
from settle.streams.settling import checkpoint as _checkpoint
from settle.streams.settling.safety import Safety, SafetyPolicy
from settle.streams.settling.tracker import Dropped, InvalidEvent, Outcome, Tracker, TrackerConfig


@dataclass
class PartitionSettler:
    """Settles the buffers of one source partition and knows its safe restart offset."""

    partition: int
    config: TrackerConfig = field(default_factory=TrackerConfig)
    source_topic: str = "edits"
    agent: str = "settle"
    #: run the partition clock on record timestamps too (trusted only when the
    #: ingest endpoint or the broker sets them; see docs/event-time.md)
    record_time: bool = False
    tracker: Tracker = field(init=False)
    next_offset: int | None = field(default=None, init=False)
    dropped: dict[str, int] = field(default_factory=dict, init=False)
    dead_letters: dict[str, int] = field(default_factory=dict, init=False)
    #: settled examples with a production kept rate since the metrics last drained this
    kept_rates: list[SettledExample] = field(default_factory=list, init=False)
    #: what an example must pass before `settled` (exclusions, secrets, caps; streams/settling/safety.py)
    safety_policy: SafetyPolicy = field(default_factory=SafetyPolicy)
    safety: Safety = field(init=False)

    def __post_init__(self) -> None:
        self.tracker = Tracker(self.config)
        self.safety = Safety(self.safety_policy)

    def handle(
        self, offset: int, key: bytes | None, value: bytes | None, timestamp_ms: int | None = None
    ) -> list[Output]:
        """Apply one record; returns settled examples and dead letters to produce.

        ``timestamp_ms`` is the Kafka record timestamp; it moves the partition
        clock only under ``record_time``.
        """
        self.next_offset = offset + 1
        raw = value or b""
        outcomes: list[Outcome] = []
        if self.record_time and timestamp_ms is not None:
            outcomes = self.tracker.advance_clock(timestamp_ms)
        try:
            event = decode_event(raw)
            if self.record_time and type(event) is Tick:
                # Its record timestamp already moved the clock; its time_ms is
                # only the ticking worker's own clock, which may run fast.
                self.tracker.stats.events += 1
                return self._outputs(outcomes)
            outcomes += self.tracker.process(event, offset)
        except InvalidEvent as exc:
            letter = self._dead_letter(offset, key, raw, exc.reason, str(exc))
            return self._outputs(outcomes + exc.outcomes) + [letter]
        except InvalidRecord as exc:
            # An event of this buffer we cannot read: its regions lose their voucher.
            # (An empty value or tombstone names no event, so nothing was missed.)
            stray = buffer_of(raw) if raw else None
            if stray is not None:
                outcomes += self.tracker.missed(*stray)
            elif raw and key:
                session, sep, path = key.decode("utf-8", "replace").partition("\x1f")
                if sep:
                    outcomes += self.tracker.missed(session, path)
            letter = self._dead_letter(offset, key, raw, exc.reason, str(exc))
            return self._outputs(outcomes) + [letter]
        return self._outputs(outcomes)

    def _outputs(self, outcomes: list[Outcome]) -> list[Output]:
        out: list[Output] = []
        for outcome in outcomes:
            if isinstance(outcome, SettledExample):
                outcome = self.safety.apply(with_production_kept_rate(outcome))
                if outcome is None:  # excluded file or over a cap: counted in safety.dropped
                    continue
                if outcome.production_kept_rate is not None:
                    self.kept_rates.append(outcome)
                out.append(Output("settled", outcome.id.encode(), encode(outcome)))
            elif isinstance(outcome, Dropped):
                self.dropped[outcome.reason] = self.dropped.get(outcome.reason, 0) + 1
        return out

    def safe_offset(self) -> int | None:
        """First offset a replacement worker must re-read to rebuild every open region.

        Offsets below it are fully reflected in what has been produced, so it is
        what the consumer may commit.
        """
        oldest = self.tracker.oldest_open_birth_position()
        return oldest if oldest is not None else self.next_offset

    def checkpoint(self) -> bytes:
        """This settler's whole state as bytes (:mod:`settle.streams.settling.checkpoint`)."""
        return _checkpoint.dumps(_checkpoint.capture(self))

    def restore(self, data: bytes) -> None:
        """Become the settler a :meth:`checkpoint` captured (raises CheckpointError on bad bytes).

        Replaying the records from ``next_offset`` on then gives the outputs an
        uninterrupted settler would have given.
        """
        _checkpoint.rebuild(_checkpoint.loads(data), self)

    def _dead_letter(
        self, offset: int, key: bytes | None, raw: bytes, reason: str, error: str
    ) -> Output:
        self.dead_letters[reason] = self.dead_letters.get(reason, 0) + 1
        return dead_letter(Consumed(self.source_topic, self.partition, offset, key, raw), reason, error, self.agent)
