"""The scoring agent's logic without a broker: dead letters, dedupe and routing of one batch."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from settle.schemas.codecs import decode_dead_letter, decode_settled, encode
from settle.schemas.examples import SettledExample
from settle.schemas.scored import BandPolicy, ScoredExample
from settle.streams.contracts.sampling import SamplingConfig
from settle.streams.records import Consumed
from settle.streams.runtime.student import OnnxStudent
from settle.streams.scoring.batch import BatchScorer
from settle.streams.scoring.score import ScoringConfig, score_batch
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate

#: a band that keeps every example whose samples parse, so routing to `kept` is exercised
WIDE = ScoringConfig(policy=BandPolicy(mode="median", k=2, round_size=2, keep_min_median=0.0, keep_max_median=1e9),
                     sampling=SamplingConfig(max_new_tokens=96, seed=1))
QUICK = ScoringConfig(policy=WIDE.policy, sampling=SamplingConfig(max_new_tokens=8, seed=1))


@pytest.fixture(scope="module")
def examples() -> list[SettledExample]:
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=3, seed=11))]
    return settle_records(enumerate(lines)).examples[:6]


@pytest.fixture(scope="module")
def source(student_dir: Path) -> OnnxStudent:
    return OnnxStudent(student_dir)


def _consumed(values: list[bytes], start: int = 0) -> list[Consumed]:
    return [Consumed("t.settled", 2, start + i, f"k{i}".encode(), v) for i, v in enumerate(values)]


def test_outputs_equal_score_batch_and_route_keepers(examples: list[SettledExample], bootstrapped_student: Path) -> None:
    """A trained student parses its output, so some examples land in the (wide) band and go to `kept` too."""
    source = OnnxStudent(bootstrapped_student)
    result = BatchScorer(WIDE).handle(_consumed([encode(e) for e in examples]), source)
    want = score_batch(examples, source, WIDE)
    assert [encode(s) for s in result.scored] == [encode(s) for s in want]
    scored = [o for o in result.outputs if o.topic == "scored"]
    kept = [o for o in result.outputs if o.topic == "kept"]
    assert [o.value for o in scored] == [encode(s) for s in want]
    assert [o.key for o in scored] == [s.id.encode() for s in want]
    keepers = [s for s in want if s.decision.decision == "keep"]
    assert keepers and [msgspec.json.decode(o.value, type=ScoredExample).id for o in kept] == [s.id for s in keepers]
    assert {o.topic for o in result.outputs} <= {"scored", "kept"}


def test_a_bad_record_is_dead_lettered_with_its_position_and_the_rest_scored(
    examples: list[SettledExample], source: OnnxStudent
) -> None:
    scorer = BatchScorer(QUICK)
    good = encode(examples[0])
    bad = [b"not json", b"", b"\xef\xbb\xbf" + good, b"\xff\xfe" + good, b'{"v": 1, "id": 5}']
    result = scorer.handle(_consumed([bad[0], good, *bad[1:]], start=40), source)
    letters = [decode_dead_letter(o.value) for o in result.outputs if o.topic == "dead-letter"]
    # the shared classifier's reasons, as on `edits` (a BOM line read "Expected `object`, got `int`" before)
    assert [(d.reason, d.offset, d.partition, d.source_topic, d.value) for d in letters] == [
        ("malformed", 40, 2, "t.settled", bad[0]), ("malformed", 42, 2, "t.settled", b""),
        ("byte_order_mark", 43, 2, "t.settled", bad[2]), ("invalid_utf8", 44, 2, "t.settled", bad[3]),
        ("invalid_settled", 45, 2, "t.settled", bad[4])]
    assert all(d.error and d.agent == "score" for d in letters)
    assert "byte order mark" in letters[2].error and "UTF-16" in letters[3].error
    assert [s.id for s in result.scored] == [examples[0].id]
    assert scorer.dead_letters == {"malformed": 2, "byte_order_mark": 1, "invalid_utf8": 1, "invalid_settled": 1}


def test_repeats_are_scored_once_within_and_across_batches(examples: list[SettledExample], source: OnnxStudent) -> None:
    scorer = BatchScorer(QUICK, remember=2)
    a, b, c = (encode(e) for e in examples[:3])
    first = scorer.handle(_consumed([a, a, b]), source)
    assert [s.id for s in first.scored] == [examples[0].id, examples[1].id] and first.repeats == 1
    second = scorer.handle(_consumed([b, c]), source)
    assert [s.id for s in second.scored] == [examples[2].id] and second.repeats == 1
    # memory is bounded: the oldest id (a) was forgotten, so a late repeat of it is scored again, identically
    third = scorer.handle(_consumed([a]), source)
    assert [encode(s) for s in third.scored] == [encode(first.scored[0])]
    assert decode_settled(a).id == examples[0].id
