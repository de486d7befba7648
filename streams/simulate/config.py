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

#: Labelled noise classes known from the field (``SimulationConfig.noise_rate``). Each is an
#: episode away from the code being typed: the user moves to another spot of an open file, a
#: prediction is requested there, and then
#:
#: * ``reverted``: a word of the region is changed, then undone (settles unchanged);
#: * ``unrelated_rewrite``: the region's lines are selected and retyped as code from another
#:   file (the settled text has nothing to do with the region or its context);
#: * ``abandoned_typing``: a new line is started with a few characters of some statement and
#:   left half-typed;
#: * ``paste_from_elsewhere``: a block of another file is pasted into the region and kept;
#: * ``formatter_run``: a formatter rewrites the region's style only (quotes, spacing);
#: * ``region_deleted``: the region's lines are deleted.
#:
#: The class travels with the simulation (``Simulation.noise``, by request id), never on the
#: wire: a real editor cannot say which of its edits were noise.
NOISE_CLASSES: tuple[str, ...] = (
    "reverted",
    "unrelated_rewrite",
    "abandoned_typing",
    "paste_from_elsewhere",
    "formatter_run",
    "region_deleted",
)
#: the documented noisy setting (``SimulationConfig(noise_rate=NOISY_RATE)``): per burst of typing
NOISY_RATE = 0.2
#: the class of every settled example whose request is not a noise episode's
CLEAN = "clean"


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
    #: Per burst of typing, the chance of a labelled noise episode (``NOISE_CLASSES``). 0 (the
    #: default) draws nothing extra, so the default stream is byte-identical to the one before
    #: noise existed. 0.2 (``NOISY_RATE``, what the benches use) makes about a fifth of the
    #: changed settled examples noise, every class about equally (tests/unit/streams/simulate/test_noise.py).
    noise_rate: float = 0.0
    #: Relative weights of ``NOISE_CLASSES``, in that order (default: equal).
    noise_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.sessions < 0 or self.jitter_ms < 0 or self.max_files < 1:
            raise ValueError("sessions and jitter_ms must be >= 0 and max_files >= 1")
        if not 0 <= self.noise_rate <= 1:
            raise ValueError(f"noise_rate must be in [0, 1], got {self.noise_rate}")
        if len(self.noise_weights) != len(NOISE_CLASSES) or min(self.noise_weights) < 0 or not sum(self.noise_weights):
            raise ValueError(f"noise_weights needs {len(NOISE_CLASSES)} non-negative weights, not all 0")


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
    #: request id -> noise class (``NOISE_CLASSES``) of every request born in a noise episode;
    #: a side table, not on the wire. Requests not in it are ``CLEAN``.
    noise: dict[str, str] = field(default_factory=dict)

    def noise_class(self, request_id: str) -> str:
        """The labelled noise class of a request's settled example (``CLEAN`` when none)."""
        return self.noise.get(request_id, CLEAN)
