"""The replay boundary rule, without a broker: a span emits exactly the regions born in it."""

from __future__ import annotations

import dataclasses

from settle.schemas.codecs import decode_event, encode
from settle.streams.settling.partition import PartitionSettler
from settle.streams.settling.span import SpanSettler, birth_id, default_warmup_ms
from settle.streams.settling.tracker import TrackerConfig
from settle.streams.simulate import SimulationConfig, simulate

# Idle-buffer memory (where the tracker has it) shorter than the simulation, so the warm-up starts mid-topic.
_FIELDS = {f.name for f in dataclasses.fields(TrackerConfig)}
CONFIG = TrackerConfig(**({"memory_ms": 120_000} if "memory_ms" in _FIELDS else {}))


def _lines() -> list[bytes]:
    return [encode(e) for e in simulate(SimulationConfig(sessions=40, seed=5, tick_interval_ms=1000))]


def _live(lines: list[bytes]) -> dict[str, bytes]:
    settler = PartitionSettler(0, CONFIG)
    return {o.key.decode(): o.value for i, raw in enumerate(lines) for o in settler.handle(i, None, raw)
            if o.topic == "settled"}


def _replay(lines: list[bytes], warm: int, start: int, end: int | None) -> tuple[dict[str, bytes], SpanSettler, int]:
    span = SpanSettler(0, start, end, CONFIG)
    out: dict[str, bytes] = {}
    read = warm
    for i in range(warm, len(lines)):
        for o in span.handle(i, None, lines[i]):
            if o.topic == "settled":
                out[o.key.decode()] = o.value
        read = i + 1
        if span.done():
            break
    return out, span, read


def test_span_emits_the_live_bytes_of_exactly_the_regions_born_in_it() -> None:
    lines = _lines()
    live = _live(lines)
    births = {birth_id(raw): i for i, raw in enumerate(lines)}
    births.pop(None, None)
    n = len(lines)
    start, end = n // 3, 2 * n // 3
    expected = {k: v for k, v in live.items() if start <= births[k] < end}
    assert 0 < len(expected) < len(live)

    # Warm-up from the beginning, and from ttl + quiescence + lateness of event time before the span.
    t_start = decode_event(lines[start]).time_ms
    window = default_warmup_ms(CONFIG)
    warm = next(i for i, raw in enumerate(lines) if decode_event(raw).time_ms >= t_start - window)
    assert 0 < warm < start
    for w in (0, warm):
        got, span, read = _replay(lines, w, start, end)
        assert got == expected
        assert span.suppressed > 0
        assert read < n, "reading stops once every region born in the span is decided"


def test_open_span_and_whole_topic() -> None:
    lines = _lines()
    live = _live(lines)
    got, span, _ = _replay(lines, 0, 0, None)
    assert got == live and span.suppressed == 0 and not span.done()


def test_birth_id_reads_only_requests() -> None:
    lines = _lines()
    ids = [birth_id(raw) for raw in lines]
    assert any(ids) and None in ids
    assert birth_id(b"{not json") is None and birth_id(b"") is None and birth_id(b"[1,2]") is None
