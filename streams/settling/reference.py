"""The offline reference: the same tracker over a file, no broker.

Anyone can check what a stream should have settled by running this on the
records that went into it; the integration tests and `make run` compare the
topic against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from settle.schemas.codecs import InvalidRecord, buffer_of, decode_event
from settle.schemas.examples import SettledExample

from settle.streams.scoring.kept_rate import with_production_kept_rate
from settle.streams.settling.safety import Safety, SafetyPolicy
from settle.streams.settling.tracker import InvalidEvent, Outcome, Tracker, TrackerConfig


@dataclass
class OfflineResult:
    tracker: Tracker
    examples: list[SettledExample] = field(default_factory=list)
    #: (position, reason, message) of every record the stream would dead-letter
    invalid: list[tuple[int, str, str]] = field(default_factory=list)
    #: what safety dropped and scrubbed (the stream applies the same policy before `settled`)
    safety: Safety = field(default_factory=Safety)


def settle_records(
    records: Iterable[tuple[int, bytes]],
    config: TrackerConfig = TrackerConfig(),
    *,
    flush: bool = False,
    safety: SafetyPolicy = SafetyPolicy(),
) -> OfflineResult:
    """Settle (position, raw value) records in order, as one partition would.

    A file carries no record timestamps, so the partition clock runs on ticks
    alone (as a stream does without ``record_time``). What a refused record
    caused (regions of its buffer dropped, due ones settled) counts as a stream would.
    """
    tracker = Tracker(config)
    result = OfflineResult(tracker=tracker, safety=Safety(safety))
    for position, raw in records:
        outcomes: list[Outcome]
        try:
            outcomes = tracker.process(decode_event(raw), position)
        except InvalidEvent as exc:
            result.invalid.append((position, exc.reason, str(exc)))
            outcomes = exc.outcomes
        except InvalidRecord as exc:
            result.invalid.append((position, exc.reason, str(exc)))
            stray = buffer_of(raw) if raw else None
            outcomes = tracker.missed(*stray) if stray is not None else []
        result.examples.extend(_safe(result, outcomes))
    if flush:
        result.examples.extend(_safe(result, tracker.flush()))
    return result


def _safe(result: OfflineResult, outcomes: Iterable[Outcome]) -> list[SettledExample]:
    """Settled examples as the stream writes them: kept rate on the raw text, then made safe."""
    out = []
    for o in outcomes:
        if isinstance(o, SettledExample):
            safe = result.safety.apply(with_production_kept_rate(o))
            if safe is not None:
                out.append(safe)
    return out
