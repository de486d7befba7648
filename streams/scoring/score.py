"""Score settled examples: student samples in rounds, distances, band decision.

Free of Faust and Kafka: the scoring agent, `settle score FILE` and the tests
all call :func:`score_batch`. Sampling happens in rounds across the whole
batch, and an example leaves the batch as soon as its decision can no longer
change (adaptive k), so the expensive part shrinks round by round.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import msgspec

from settle.schemas.examples import SettledExample
from settle.schemas.scored import BandPolicy, ScoredExample
from settle.streams.contracts.prompt import (
    EDITABLE_REGION_END,
    ENDOFTEXT,
    OutputParseError,
    parse_output,
    render_prompt,
)
from settle.streams.contracts.sampling import SamplingConfig, example_seed  # noqa: F401  (example_seed re-exported)
from settle.streams.scoring.band import calibrate, decide, decide_adaptive, decision_is_final, screen
from settle.streams.scoring.distance import sample_distances

StopReason = Literal["end", "eos", "budget"]


@dataclass(frozen=True)
class Draw:
    """One sampled continuation, without its stop token, and what ended it."""

    text: str
    stop: StopReason


class SampleSource(Protocol):
    """What the scorer needs from a student: named, versioned, able to sample."""

    model_name: str
    model_version: str
    #: an example's draws are the same bits whatever batch it is drawn in; recorded on every
    #: scored example (a source without the attribute is recorded as not invariant)
    batch_invariant: bool

    def draw(
        self, prompts: Sequence[str], n: int, seeds: Sequence[int], *, temperature: float,
        top_p: float, max_new_tokens: int, top_k: int = 0,
    ) -> list[list[Draw]]:
        """n samples for each prompt; ``seeds[i]`` alone decides prompt i's randomness."""
        ...


@dataclass(frozen=True)
class ScoringConfig:
    """How examples are scored: the band, the recorded sampling settings, adaptive k."""

    policy: BandPolicy = field(default_factory=BandPolicy)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    #: stop sampling an example once its decision can no longer change (same decisions as full k)
    adaptive: bool = True
    distance_workers: int = 1


def parse_draw(draw: Draw, example: SettledExample | None = None) -> str:
    """Region text of a draw; raises OutputParseError for output the region cannot take.

    ``example`` (its region and cursor) is needed for the prompt format's insertion form.
    """
    marker = {"end": EDITABLE_REGION_END, "eos": ENDOFTEXT, "budget": ""}[draw.stop]
    return parse_output(draw.text + marker, example=example)


@dataclass
class _Pending:
    example: SettledExample
    prompt: str
    samples: list[str] = field(default_factory=list)
    distances: list[int | None] = field(default_factory=list)
    normalised: list[float | None] = field(default_factory=list)
    rounds: list[list[float]] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    user_edit: int = 0

    @property
    def seen(self) -> list[float]:
        return [v for r in self.rounds for v in r]


def score_batch(
    examples: Sequence[SettledExample], source: SampleSource, config: ScoringConfig = ScoringConfig()
) -> list[ScoredExample]:
    """Score examples together; results in input order, one per example."""
    policy = config.policy
    results: dict[int, ScoredExample] = {}
    pending: dict[int, _Pending] = {}
    for i, example in enumerate(examples):
        early = screen(example, policy)
        if early is not None:
            results[i] = _record(example, early, None, source, config)
        else:
            prompt = render_prompt(example, max_chars=policy.max_prompt_chars)
            pending[i] = _Pending(example, prompt)

    # Full k draws the very same rounds and merely never stops early, so adaptive
    # and full see identical samples and can only differ in how many they use.
    round_size = policy.round_size
    round_index = 0
    active = list(pending)
    while active:
        n = min(round_size, policy.k - len(pending[active[0]].seen))
        draws = source.draw(
            [pending[i].prompt for i in active],
            n,
            [config.sampling.example_seed(pending[i].example.id, round_index) for i in active],
            **config.sampling.decoding(),
        )
        for i, row in zip(active, draws, strict=True):
            _add_round(pending[i], row, policy, config)
        active = [i for i in active if not (config.adaptive and decision_is_final(pending[i].seen, policy))
                  and len(pending[i].seen) < policy.k]
        round_index += 1

    for i, p in pending.items():
        decision = decide_adaptive(iter(p.rounds), policy) if config.adaptive else decide(p.seen, policy)
        results[i] = _record(p.example, decision, p, source, config)
    return [results[i] for i in range(len(examples))]


def _add_round(p: _Pending, row: Sequence[Draw], policy: BandPolicy, config: ScoringConfig) -> None:
    parsed: list[str | None] = []
    for draw in row:
        try:
            parsed.append(parse_draw(draw, p.example))
        except OutputParseError as exc:
            p.failures[exc.reason] = p.failures.get(exc.reason, 0) + 1
            parsed.append(None)
    texts = [t for t in parsed if t is not None]
    d = sample_distances(
        texts, p.example.original_text, p.example.settled_text,
        cap=policy.distance_cap, workers=config.distance_workers,
    )
    p.user_edit = d.user_edit_distance
    it = iter(zip(d.distances, d.normalised))
    values: list[float] = []
    for draw, text in zip(row, parsed):
        if text is None:  # unparseable: no better than hopeless
            p.samples.append(draw.text)
            p.distances.append(None)
            p.normalised.append(None)
            values.append(math.inf)
        else:
            dist, norm = next(it)
            p.samples.append(text)
            p.distances.append(dist)
            p.normalised.append(norm)
            values.append(norm)
    p.rounds.append(values)


def _record(
    example: SettledExample, decision, p: _Pending | None, source: SampleSource, config: ScoringConfig  # type: ignore[no-untyped-def]
) -> ScoredExample:
    return ScoredExample(
        id=example.id,
        example=example,
        decision=decision,
        samples=p.samples if p else [],
        distances=p.distances if p else [],
        normalised=p.normalised if p else [],
        user_edit_distance=p.user_edit if p else 0,
        parse_failures=p.failures if p else {},
        model_name=source.model_name,
        model_version=source.model_version,
        seed=config.sampling.seed,
        temperature=config.sampling.temperature,
        top_p=config.sampling.top_p,
        top_k=config.sampling.top_k,
        max_new_tokens=config.sampling.max_new_tokens,
        batch_invariant=bool(getattr(source, "batch_invariant", False)),
    )


def calibrate_band(
    examples: Sequence[SettledExample], source: SampleSource, base: BandPolicy, easy: float = 0.25,
    hard: float = 0.75, max_new_tokens: int = 128,
) -> BandPolicy:
    """Score with an unbounded median band (so medians are exact), then fit the band to their quantiles."""
    wide = msgspec.structs.replace(base, mode="median", keep_min_median=0.0, keep_max_median=1e9)
    config = ScoringConfig(policy=wide, sampling=SamplingConfig(max_new_tokens=max_new_tokens), adaptive=False)
    medians = []
    for i in range(0, len(examples), 16):
        for s in score_batch(examples[i : i + 16], source, config):
            if s.decision.samples_used:
                medians.append(s.decision.median if s.decision.median is not None else math.inf)
    return calibrate(medians, base, easy=easy, hard=hard)
