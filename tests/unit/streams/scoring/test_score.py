"""The scorer with a real (tiny, random) student: what gets recorded, and determinism."""

from __future__ import annotations

from pathlib import Path

import pytest

from settle.schemas.codecs import encode
from settle.schemas.examples import SettledExample
from settle.schemas.scored import BandPolicy
from settle.streams.contracts.sampling import SamplingConfig
from settle.streams.runtime.student import ModelDirError, OnnxStudent
from settle.streams.scoring.score import Draw, ScoringConfig, example_seed, parse_draw, score_batch
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate


@pytest.fixture(scope="module")
def examples() -> list[SettledExample]:
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=4, seed=5))]
    return settle_records(enumerate(lines)).examples


@pytest.fixture(scope="module")
def source(student_dir: Path) -> OnnxStudent:
    return OnnxStudent(student_dir)


CONFIG = ScoringConfig(policy=BandPolicy(k=8, round_size=4), sampling=SamplingConfig(max_new_tokens=24, seed=3))


def test_every_decision_records_how_it_was_made(examples: list[SettledExample], source: OnnxStudent) -> None:
    scored = score_batch(examples[:12], source, CONFIG)
    assert [s.id for s in scored] == [e.id for e in examples[:12]]
    for s in scored:
        assert s.model_version == source.model_version and s.model_version.startswith("sha-")
        assert s.seed == 3 and s.decision.policy.k == 8 and s.max_new_tokens == 24
        if s.example.original_text == s.example.settled_text:
            assert s.decision.decision == "unchanged" and s.samples == []
        else:
            used = s.decision.samples_used
            assert 0 < used <= 8 and len(s.samples) == len(s.distances) == len(s.normalised) == used
            assert s.user_edit_distance > 0
            assert sum(s.parse_failures.values()) == sum(d is None for d in s.distances)


def test_scoring_is_deterministic_and_independent_of_the_batch(
    examples: list[SettledExample], source: OnnxStudent
) -> None:
    changed = [e for e in examples if e.original_text != e.settled_text][:6]
    together = score_batch(changed, source, CONFIG)
    again = score_batch(changed, source, CONFIG)
    alone = [score_batch([e], source, CONFIG)[0] for e in changed[:3]]
    assert [encode(s) for s in together] == [encode(s) for s in again]
    assert [encode(s) for s in together[:3]] == [encode(s) for s in alone]


def test_seeds_differ_per_example_and_round() -> None:
    seeds = {example_seed(0, i, r) for i in ("a", "b") for r in range(3)}
    assert len(seeds) == 6 and example_seed(0, "a", 1) == example_seed(0, "a", 1)


@pytest.mark.parametrize(
    ("draw", "expected"),
    [
        (Draw("x = 1\n", "end"), "x = 1\n"),
        (Draw("x = <|user_cursor_is_here|>1", "end"), "x = 1"),
    ],
)
def test_parse_draw(draw: Draw, expected: str) -> None:
    assert parse_draw(draw) == expected


def test_parse_draw_insertion_form_needs_the_example() -> None:
    from settle.schemas.events import PromptContext

    ex = SettledExample(id="i", request_id="r", session_id="s", path="a.py", encoding="utf-8", requested_at_ms=0,
                        settled_at_ms=1, original_text="x = 1\n", settled_text="x = 12\n", cursor=5,
                        context=PromptContext())
    assert parse_draw(Draw("<|user_cursor_is_here|>2", "end"), ex) == "x = 12\n"
    assert parse_draw(Draw("x = 3\n", "end"), ex) == "x = 3\n"
    with pytest.raises(ValueError):
        parse_draw(Draw("<|user_cursor_is_here|>2", "end"))


@pytest.mark.parametrize("draw", [Draw("x = 1", "budget"), Draw("x", "eos"), Draw("<|excerpt|>", "end")])
def test_parse_draw_refuses_output_outside_the_region(draw: Draw) -> None:
    from settle.streams.contracts.prompt import OutputParseError

    with pytest.raises(OutputParseError):
        parse_draw(draw)


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="not an exported student"):
        OnnxStudent(tmp_path)
