"""Interleaving sessions for delivery: bounded disorder across buffers, in order within one."""

from __future__ import annotations

import random
from collections.abc import Sequence

from settle.schemas.events import (
    Event,
    OffsetEncoding,
    Tick,
)
from settle.streams.simulate.config import FINAL_TICK_DELAY_MS, Simulation, SimulationConfig
from settle.streams.simulate.session import _Session


def _deliver(config: SimulationConfig, sessions: list[_Session]) -> Simulation:
    """Merge sessions by event time with bounded cross-buffer disorder.

    Each event gets a delivery key in [time, time + jitter], made non-decreasing
    per buffer (so a buffer's own events stay in order). Sorting by key then
    means an event never precedes one more than ``jitter_ms`` older than it.
    """
    rng = random.Random(f"settle-sim-jitter:{config.seed}")
    keyed: list[tuple[int, int, Event]] = []
    seq = 0
    last_key: dict[int, int] = {}
    max_t = config.start_ms
    for s in sessions:
        for gid, ev in s.out:
            k = ev.time_ms + (rng.randint(0, config.jitter_ms) if config.jitter_ms else 0)
            k = max(k, last_key.get(gid, 0))
            last_key[gid] = k
            keyed.append((k, seq, ev))
            seq += 1
            if ev.time_ms > max_t:
                max_t = ev.time_ms
    if config.tick_interval_ms > 0:
        # Keyed after every event that could be older, so a tick acts as a
        # watermark: nothing delivered after a tick is older than it.
        t = config.start_ms + config.tick_interval_ms
        while t <= max_t:
            keyed.append((t + config.jitter_ms, seq, Tick(time_ms=t, source="simulate")))
            seq += 1
            t += config.tick_interval_ms
    keyed.sort(key=lambda x: (x[0], x[1]))
    events: list[Event] = [e for _, _, e in keyed]
    if config.final_tick and events:
        events.append(Tick(time_ms=max_t + FINAL_TICK_DELAY_MS, source="simulate"))

    initial: dict[tuple[str, str], str] = {}
    final: dict[tuple[str, str], str] = {}
    encodings: dict[tuple[str, str], OffsetEncoding] = {}
    for s in sessions:
        for b in s.bufs:
            key = (b.session_id, b.path)
            initial[key] = s.initial[b.gid]
            final[key] = b.text
            encodings[key] = b.encoding
    noise = {rid: kind for s in sessions for rid, kind in s.noise.items()}
    return Simulation(events, initial, final, encodings, noise)


def continue_after(events: Sequence[Event], gap_ms: int = 60_000) -> int:
    """A start time for more telemetry after ``events`` (final tick included).

    Telemetry appended to a topic must move on in event time: events older than
    the watermark the earlier batch left behind are late by definition.
    """
    return max(e.time_ms for e in events) + gap_ms
