"""Realistic editor telemetry, generated offline from real source files.

settle has to be tested and benchmarked without real editors, and a model is
trained on whatever settles, so the simulated users rewrite real code: each
session opens 1-3 real files with a chunk of a function removed and types it
back, with the messy parts of real editing mixed in (typos, renames, pastes,
undo/redo, formatting, accepted predictions, far-away edits, long and short
pauses). With ``noise_rate`` > 0 they also make labelled noise away from the task
(reverted edits, unrelated rewrites, abandoned typing, pastes from elsewhere,
formatter runs, deleted regions: ``NOISE_CLASSES``), labelled by request id in
``Simulation.noise``, which never goes on the wire. Offsets are exact in each session's declared encoding, events of one
buffer are in order, and buffers are interleaved with bounded disorder, as a
Kafka topic keyed by buffer would deliver them.

Everything is a function of the config and the source files, so a seed
reproduces a byte-identical JSONL stream.

Command line: ``settle simulate --sessions 20 --out edits.jsonl``.
"""

from __future__ import annotations

import random

from settle.schemas.events import Event
from settle.streams.simulate.config import (
    CLEAN,
    DEFAULT_START_MS,
    FINAL_TICK_DELAY_MS,
    NOISE_CLASSES,
    NOISY_RATE,
    Simulation,
    SimulationConfig,
)
from settle.streams.simulate.delivery import _deliver, continue_after
from settle.streams.simulate.session import _Session
from settle.streams.simulate.sources import _load_sources, _stdlib_dir

__all__ = ["CLEAN", "NOISE_CLASSES", "NOISY_RATE", "DEFAULT_START_MS", "FINAL_TICK_DELAY_MS", "Simulation", "SimulationConfig", "continue_after", "generate",
           "simulate"]


def simulate(config: SimulationConfig = SimulationConfig()) -> list[Event]:
    """The event stream in delivery order (see `generate` for the buffer texts)."""
    return generate(config).events


def generate(config: SimulationConfig = SimulationConfig()) -> Simulation:
    """Run every session on its own seeded RNG, then interleave them for delivery.

    Session i depends only on (seed, i) and the sources, so growing ``sessions``
    keeps the earlier sessions (only their start times spread out).
    """
    sources = _load_sources(config.source_dir, config.max_files, config.max_file_bytes)
    if not sources:
        raise ValueError(f"no usable *.py sources in {config.source_dir or _stdlib_dir()}")
    task_sources = [s for s in sources if s.funcs]
    if not task_sources and config.sessions:
        raise ValueError("no source file has a function body of three or more lines to rewrite")

    window = max(1, config.sessions * config.session_spread_ms)
    sessions: list[_Session] = []
    for i in range(config.sessions):
        rng = random.Random(f"settle-sim:{config.seed}:{i}")
        start = config.start_ms + rng.randrange(window)
        s = _Session(rng, config, sources, task_sources, start, buf_base=len(sessions) * 4)
        s.run()
        sessions.append(s)
    return _deliver(config, sessions)
