"""Labelled noise in simulated telemetry: classes, side table by request id, reproducibility."""

from __future__ import annotations

import io
from collections import Counter

import pytest

from settle.schemas.codecs import encode
from settle.schemas.events import PredictionRequested
from settle.schemas.jsonl import write_records
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import CLEAN, NOISE_CLASSES, NOISY_RATE, Simulation, SimulationConfig, generate

from .test_simulate import replay


@pytest.fixture(scope="module")
def noisy() -> Simulation:
    return generate(SimulationConfig(sessions=40, seed=5, noise_rate=NOISY_RATE))


def test_noise_is_off_by_default_and_draws_nothing() -> None:
    cfg = SimulationConfig(sessions=6, seed=7)
    assert cfg.noise_rate == 0
    sim = generate(cfg)
    assert sim.noise == {}
    # an explicit zero rate is the default stream, byte for byte
    a, b = io.BytesIO(), io.BytesIO()
    write_records(sim.events, a)
    write_records(generate(SimulationConfig(sessions=6, seed=7, noise_rate=0.0, noise_weights=(0, 0, 0, 0, 0, 1))).events, b)
    assert a.getvalue() == b.getvalue()


def test_noisy_stream_is_reproducible(noisy: Simulation) -> None:
    again = generate(SimulationConfig(sessions=40, seed=5, noise_rate=NOISY_RATE))
    assert [encode(e) for e in again.events] == [encode(e) for e in noisy.events]
    assert again.noise == noisy.noise


def test_noisy_stream_replays_exactly(noisy: Simulation) -> None:
    assert replay(noisy) == noisy.final_texts


def test_labels_are_a_side_table_of_settled_requests(noisy: Simulation) -> None:
    request_ids = {e.request_id for e in noisy.events if isinstance(e, PredictionRequested)}
    assert set(noisy.noise) <= request_ids
    assert set(noisy.noise.values()) == set(NOISE_CLASSES)  # every class occurs at the noisy rate
    wire = b"\n".join(encode(e) for e in noisy.events)
    assert b'"noise":' not in wire and b'"noise_class":' not in wire
    examples = settle_records(enumerate(encode(e) for e in noisy.events)).examples
    by_request = {e.request_id: e for e in examples}
    assert set(noisy.noise) <= set(by_request), "every labelled region settles"
    for rid, kind in noisy.noise.items():
        ex = by_request[rid]
        if kind == "reverted":
            assert ex.settled_text == ex.original_text
        else:
            assert ex.settled_text != ex.original_text, kind
        if kind == "region_deleted":
            assert ex.settled_text == ""
        if kind == "formatter_run":  # style only
            assert "".join(ex.settled_text.split()).replace('"', "'") == "".join(ex.original_text.split()).replace('"', "'")
        if kind in ("abandoned_typing", "paste_from_elsewhere"):
            assert len(ex.settled_text) > len(ex.original_text)
    changed = Counter(noisy.noise_class(e.request_id) for e in examples if e.settled_text != e.original_text)
    noise_share = 1 - changed[CLEAN] / sum(changed.values())
    print(f"changed settled examples by class: {dict(changed)}; noise share {noise_share:.0%}")
    assert 0.1 < noise_share < 0.4


def test_bad_noise_config() -> None:
    with pytest.raises(ValueError):
        SimulationConfig(noise_rate=1.5)
    with pytest.raises(ValueError):
        SimulationConfig(noise_weights=(1.0, 1.0))
    with pytest.raises(ValueError):
        SimulationConfig(noise_weights=(0, 0, 0, 0, 0, 0))
