"""The simulator's stream obeys the event contract the tracker relies on."""

from __future__ import annotations

import io
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import get_args

import pytest

from settle.schemas.codecs import MAX_EVENT_BYTES, decode_event, encode
from settle.schemas.events import BufferEdited, EditOrigin, PredictionRequested, Tick
from settle.schemas.jsonl import read_lines, write_records
from settle.streams.simulate import (
    FINAL_TICK_DELAY_MS,
    Simulation,
    SimulationConfig,
    generate,
    simulate,
)

UNIT_BYTES = {"utf-8": 1, "utf-16": 2, "utf-32": 4}
CODEC = {"utf-8": "utf-8", "utf-16": "utf-16-le", "utf-32": "utf-32-le"}


def to_index(text: str, offset: int, encoding: str) -> int:
    """Independent reference: units -> code points via the real codec (strict)."""
    raw = text.encode(CODEC[encoding])
    nbytes = offset * UNIT_BYTES[encoding]
    assert nbytes <= len(raw), f"offset {offset} past the end ({encoding})"
    return len(raw[:nbytes].decode(CODEC[encoding]))  # raises if mid-character


NON_ASCII_SOURCE = '''"""Module with non-ASCII text: café, naïve, 日本語, emoji 🎉🚀."""


def grüße(name):
    """Greet 👋 someone; 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 too."""
    prefix = "Héllo 🌍"
    parts = [prefix, name, "✓"]
    message = " ".join(parts)  # ça va? 🤔
    if len(message) > 40:
        message = message[:40] + "…"
    return message


def π_area(r):
    """Area of a circle (πr²) 🍕."""
    value = 3.14159 * r * r
    label = f"{value:.2f} m² 📐"
    result = (value, label)
    return result


class Ünicode:
    def __init__(self, emoji="🐍"):
        self.emoji = emoji
        self.count = 0
        self.history = []

    def bump(self, n=1):
        self.count += n
        self.history.append(("➕", n))
        text = f"{self.emoji} × {self.count}"
        return text
'''


@pytest.fixture(scope="module")
def default_sim() -> Simulation:
    return generate(SimulationConfig(sessions=30, seed=1))


@pytest.fixture(scope="module")
def unicode_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("src")
    (d / "uni.py").write_text(NON_ASCII_SOURCE, encoding="utf-8")
    (d / "uni2.py").write_text(NON_ASCII_SOURCE.replace("grüße", "saluer_𝔵"), encoding="utf-8")
    (d / "latin1.py").write_bytes("x = 'caf\xe9'\n".encode("latin-1"))  # not UTF-8: skipped
    (d / "huge.py").write_text("x = 1\n" * 50_000)  # > 200 KB: skipped
    return d


@pytest.fixture(scope="module")
def unicode_sim(unicode_dir: Path) -> Simulation:
    return generate(SimulationConfig(sessions=40, seed=3, source_dir=unicode_dir))


def replay(sim: Simulation) -> dict[tuple[str, str], str]:
    """Apply every edit to the initial texts, checking each request against the buffer."""
    texts = dict(sim.initial_texts)
    for ev in sim.events:
        if isinstance(ev, Tick):
            continue
        key = (ev.session_id, ev.path)
        assert ev.encoding == sim.encodings[key]
        text = texts[key]
        if isinstance(ev, BufferEdited):
            for r in ev.replacements:
                s, e = to_index(text, r.start, ev.encoding), to_index(text, r.end, ev.encoding)
                assert s <= e
                text = text[:s] + r.text + text[e:]
            texts[key] = text
        else:
            s = to_index(text, ev.region.start, ev.encoding)
            e = to_index(text, ev.region.end, ev.encoding)
            c = to_index(text, ev.cursor, ev.encoding)
            assert s <= c <= e
            assert ev.region_text == text[s:e], ev.request_id
    return texts


def test_deterministic_and_jsonl_roundtrip(tmp_path: Path) -> None:
    cfg = SimulationConfig(sessions=6, seed=7)
    a, b = io.BytesIO(), io.BytesIO()
    assert write_records(simulate(cfg), a) == write_records(simulate(cfg), b)
    assert a.getvalue() == b.getvalue()
    c = io.BytesIO()
    write_records(simulate(SimulationConfig(sessions=6, seed=8)), c)
    assert c.getvalue() != a.getvalue()

    path = tmp_path / "edits.jsonl"
    n = write_records(simulate(cfg), path)
    assert path.read_bytes() == a.getvalue()
    lines = list(read_lines(path))
    assert [no for no, _ in lines] == list(range(1, n + 1))
    assert [encode(decode_event(raw)) for _, raw in lines] == a.getvalue().splitlines()


def test_read_lines_keeps_bad_lines_and_numbers(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"kind":"tick","time_ms":1}\r\n\n  \nnot json\n')
    assert list(read_lines(path)) == [(1, b'{"kind":"tick","time_ms":1}'), (4, b"not json")]


def test_text_mode_writer() -> None:
    buf = io.StringIO()
    n = write_records(simulate(SimulationConfig(sessions=1, seed=2)), buf)
    assert n == len(buf.getvalue().splitlines())


def test_stream_shape(default_sim: Simulation) -> None:
    events = default_sim.events
    kinds = Counter(type(e).__name__ for e in events)
    assert kinds["BufferEdited"] > 1000
    assert 50 <= kinds["PredictionRequested"] <= 400
    assert isinstance(events[-1], Tick) and kinds["Tick"] == 1
    assert events[-1].time_ms == max(e.time_ms for e in events[:-1]) + FINAL_TICK_DELAY_MS
    requests = [e for e in events if isinstance(e, PredictionRequested)]
    assert len({r.request_id for r in requests}) == len(requests)
    assert any(r.production_prediction is not None and r.production_model for r in requests)
    assert any(r.production_prediction is None for r in requests)
    assert any(r.context.related for r in requests)
    assert any(r.context.diagnostics for r in requests)
    assert all(r.context.excerpt is not None for r in requests)
    assert sum(bool(r.context.edit_history) for r in requests) > 0.8 * len(requests)
    encodings = Counter(e.encoding for e in events if not isinstance(e, Tick))
    assert set(encodings) == {"utf-8", "utf-16", "utf-32"}
    per_session = defaultdict(set)
    for e in events:
        if not isinstance(e, Tick):
            per_session[e.session_id].add((e.encoding, e.consent))
    assert all(len(v) == 1 for v in per_session.values())
    assert all(e.time_ms >= SimulationConfig().start_ms for e in events)


def test_every_line_decodes(default_sim: Simulation) -> None:
    out = io.BytesIO()
    write_records(default_sim.events, out)
    decoded = [decode_event(line) for line in out.getvalue().splitlines()]
    assert decoded == default_sim.events


def test_time_order(default_sim: Simulation) -> None:
    jitter = SimulationConfig().jitter_ms
    last: dict[tuple[str, str], int] = {}
    high = 0
    disorder = 0
    for ev in default_sim.events:
        assert high - ev.time_ms <= jitter  # nothing overtaken by more than the jitter
        disorder = max(disorder, high - ev.time_ms)
        high = max(high, ev.time_ms)
        if not isinstance(ev, Tick):
            key = (ev.session_id, ev.path)
            assert ev.time_ms >= last.get(key, 0)
            last[key] = ev.time_ms
    assert disorder > 0  # the stream really is out of order across buffers


def test_no_jitter_is_sorted() -> None:
    times = [e.time_ms for e in simulate(SimulationConfig(sessions=5, jitter_ms=0))]
    assert times == sorted(times)


def test_offsets_match_reference_replay(default_sim: Simulation) -> None:
    assert replay(default_sim) == default_sim.final_texts


def test_offsets_non_ascii(unicode_sim: Simulation) -> None:
    assert {p.rsplit("/", 1)[1] for _, p in unicode_sim.initial_texts} == {"uni.py", "uni2.py"}
    assert replay(unicode_sim) == unicode_sim.final_texts
    edits = [e for e in unicode_sim.events if isinstance(e, BufferEdited)]
    astral = [e for e in edits if any(any(ord(ch) > 0xFFFF for ch in r.text) for r in e.replacements)]
    assert {e.encoding for e in astral} == {"utf-8", "utf-16", "utf-32"}
    requests = [e for e in unicode_sim.events if isinstance(e, PredictionRequested)]
    # offsets really differ from code-point indices, in each encoding
    for enc in ("utf-8", "utf-16"):
        assert any(
            r.encoding == enc and r.region.end != r.region.start + len(r.region_text) for r in requests
        )


def test_final_code_is_real_code(default_sim: Simulation) -> None:
    """What users leave behind still compiles: the settled text is real code."""
    for key, text in default_sim.final_texts.items():
        compile(text, key[1], "exec", dont_inherit=True)


def test_all_origins_and_pauses() -> None:
    sim = generate(SimulationConfig(sessions=60, seed=11, busy_rate=0.1, huge_paste_rate=0.1))
    origins = Counter(e.origin for e in sim.events if isinstance(e, BufferEdited))
    assert set(origins) == set(get_args(EditOrigin))
    assert any(not e.consent for e in sim.events if not isinstance(e, Tick))

    # Follow each request's region through later edits of its buffer, like the tracker.
    gaps: list[int] = []
    spans: list[int] = []
    big = False
    texts = dict(sim.initial_texts)
    regions: dict[tuple[str, str], list] = {}
    for ev in sim.events:
        if isinstance(ev, Tick):
            continue
        key = (ev.session_id, ev.path)
        text = texts[key]
        if isinstance(ev, PredictionRequested):
            s = to_index(text, ev.region.start, ev.encoding)
            e = to_index(text, ev.region.end, ev.encoding)
            regions[key] = [s, e, ev.time_ms, ev.time_ms]
            continue
        reg = regions.get(key)
        for r in ev.replacements:
            s, e = to_index(text, r.start, ev.encoding), to_index(text, r.end, ev.encoding)
            text = text[:s] + r.text + text[e:]
            if reg is None:
                continue
            delta = len(r.text) - (e - s)
            if e < reg[0]:
                reg[0] += delta
                reg[1] += delta
            elif s <= reg[1]:
                reg[0] = min(reg[0], s)
                reg[1] = max(reg[1] + delta, s + len(r.text))
                if ev.time_ms > reg[3]:
                    gaps.append(ev.time_ms - reg[3])
                reg[3] = ev.time_ms
                spans.append(reg[3] - reg[2])
                big = big or len(text[reg[0] : reg[1]].encode()) > 4096
        texts[key] = text
    assert any(g > 10_000 for g in gaps)
    assert any(1_000 < g < 10_000 for g in gaps)
    assert max(spans) > 300_000  # a region kept busy past the TTL
    assert big  # a region grown past 4 KiB


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(SimulationConfig(sessions=1, source_dir=tmp_path))
    (tmp_path / "a.py").write_text("x = 1\n")  # no function to rewrite
    with pytest.raises(ValueError):
        generate(SimulationConfig(sessions=1, source_dir=tmp_path))
    assert generate(SimulationConfig(sessions=0, source_dir=tmp_path)).events == []


def test_events_fit_the_topic(default_sim: Simulation) -> None:
    assert max(len(encode(e)) for e in default_sim.events) < MAX_EVENT_BYTES


def test_periodic_ticks_are_watermarks() -> None:
    events = simulate(SimulationConfig(sessions=8, seed=4, tick_interval_ms=5_000))
    ticks = [i for i, e in enumerate(events) if isinstance(e, Tick)]
    assert len(ticks) > 10
    assert [events[i].time_ms for i in ticks] == sorted(events[i].time_ms for i in ticks)
    for i in ticks:  # nothing delivered after a tick is older than it
        assert all(e.time_ms >= events[i].time_ms for e in events[i + 1 :])


def test_cli_writes_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "e.jsonl"
    before_ms = int(time.time() * 1000)
    from typer.testing import CliRunner

    from settle.streams.cli import app

    result = CliRunner().invoke(app, ["simulate", "--sessions", "2", "--seed", "5", "--start", "now", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [decode_event(raw) for _, raw in read_lines(out)]
    assert lines and isinstance(lines[-1], Tick)
    assert lines[0].time_ms >= before_ms
