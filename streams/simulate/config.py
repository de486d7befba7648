"""What a simulation is asked for (SimulationConfig) and what it gives back (Simulation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from settle.schemas.events import (
    Event,
    OffsetEncoding,
)

#: 2026-01-01T00:00:00Z: a fixed default so runs are reproducible.
DEFAULT_START_MS = 1_767_225_600_000
#: The final tick lands this far after the last event: past the 300 s region
#: TTL plus the 10 s quiet period, so an event-time consumer decides every region.
FINAL_TICK_DELAY_MS = 310_000

#: A cp-offset edit: replace [start, end) of the current text with text.
_Op = tuple[int, int, str]


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate; equal configs over equal sources give equal streams."""

    sessions: int = 20
    seed: int = 0
    start_ms: int = DEFAULT_START_MS
    #: Cross-buffer delivery disorder bound (keep below the consumer's allowed lateness).
    jitter_ms: int = 1500
    #: End with one Tick at max event time + 310 s so every open region is decided.
    final_tick: bool = True
    #: Directory of ``*.py`` files (top level only); None = the stdlib directory.
    source_dir: Path | None = None
    #: Use at most this many files (first in name order, after skipping unusable ones).
    max_files: int = 200
    max_file_bytes: int = 200_000
    #: Mean spacing of session starts; sessions overlap since each lasts minutes.
    session_spread_ms: int = 30_000
    #: If > 0, also emit a Tick every this many ms of event time.
    tick_interval_ms: int = 0
    consent_rate: float = 0.95
    #: Per-session chance of a region kept busy for more than five minutes.
    busy_rate: float = 0.08
    #: Per-session chance of a paste that makes a region larger than 4 KiB.
    huge_paste_rate: float = 0.06

    def __post_init__(self) -> None:
        if self.sessions < 0 or self.jitter_ms < 0 or self.max_files < 1:
            raise ValueError("sessions and jitter_ms must be >= 0 and max_files >= 1")


@dataclass
class Simulation:
    """A generated stream plus the buffer texts a reference replay needs.

    The stream never carries whole files (as a real editor wouldn't), so tests
    that replay edits get the starting texts here.
    """

    events: list[Event]
    #: (session_id, path) -> buffer text before the first event
    initial_texts: dict[tuple[str, str], str]
    #: (session_id, path) -> buffer text after the last event
    final_texts: dict[tuple[str, str], str]
    encodings: dict[tuple[str, str], OffsetEncoding] = field(default_factory=dict)
