"""Scoring is batch-invariant on the CPU provider: one set of settled examples scored in batches of
1, 3, 5 and 16, and beside different neighbours, gives byte-identical ScoredExample records, and
each record says that it is invariant (and says so honestly when the sampler is not)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from settle.schemas.codecs import encode
from settle.schemas.examples import SettledExample
from settle.schemas.scored import BandPolicy
from settle.streams.contracts.prompt import render_prompt
from settle.streams.contracts.sampling import SamplingConfig
from settle.streams.runtime.student import OnnxStudent
from settle.streams.scoring.score import ScoringConfig, score_batch
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate

CONFIG = ScoringConfig(policy=BandPolicy(k=6, round_size=3), sampling=SamplingConfig(max_new_tokens=24, seed=9))


@pytest.fixture(scope="module")
def examples() -> list[SettledExample]:
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=6, seed=21))]
    settled = settle_records(enumerate(lines)).examples
    changed = [e for e in settled if e.original_text != e.settled_text]
    same = [e for e in settled if e.original_text == e.settled_text]
    return changed[:17] + same[:2]  # mostly sampled; two decided before sampling


@pytest.fixture(scope="module")
def source(student_dir: Path) -> OnnxStudent:
    return OnnxStudent(student_dir, providers=["CPUExecutionProvider"])


def _scored(examples: list[SettledExample], source: OnnxStudent, batch: int) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for at in range(0, len(examples), batch):
        for s in score_batch(examples[at:at + batch], source, CONFIG):
            out[s.id] = encode(s)
    return out


def test_scored_records_are_the_same_bytes_in_any_batch(examples: list[SettledExample], source: OnnxStudent) -> None:
    assert source.batch_invariant
    want = _scored(examples, source, 1)
    assert len(want) == len(examples) > 15
    lengths = {len(source.encode_prompt(render_prompt(e, max_chars=CONFIG.policy.max_prompt_chars))) for e in examples}
    assert len(lengths) > 5  # prompts of many lengths sit side by side
    shuffled = [examples[i] for i in np.random.default_rng(3).permutation(len(examples))]
    for order in (examples, shuffled, examples[::-1]):
        for batch in (3, 5, 16):
            assert _scored(order, source, batch) == want, batch
    decoded = [score_batch([e], source, CONFIG)[0] for e in examples[:2]]
    assert all(s.batch_invariant for s in decoded)
    assert any(s.samples for s in decoded)


def test_a_sampler_without_the_promise_records_so(examples: list[SettledExample], student_dir: Path) -> None:
    padded = OnnxStudent(student_dir, providers=["CPUExecutionProvider"])
    padded.sampler.batch_invariant = False  # what CUDA samplers do: one padded run per batch
    scored = score_batch(examples[:3], padded, CONFIG)
    assert [s.batch_invariant for s in scored] == [False] * 3
