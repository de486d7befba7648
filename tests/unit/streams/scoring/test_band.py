from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settle.schemas.events import PromptContext
from settle.schemas.examples import SettledExample
from settle.streams.scoring.band import BandPolicy, Decision, decide, decide_adaptive, screen
from settle.streams.scoring.distance import sample_distances

DEFAULT = BandPolicy()
MEDIAN = BandPolicy(mode="median")


def solved_list(solved: int, k: int = 16, *, hit: float = 0.0, miss: float = 1.0) -> list[float]:
    return [hit] * solved + [miss] * (k - solved)


# --------------------------------------------------------------------------- policy


def test_defaults() -> None:
    assert DEFAULT.mode == "solve_rate"
    assert (DEFAULT.k, DEFAULT.round_size) == (16, 4)
    assert DEFAULT.solve_threshold == 0.34
    assert (DEFAULT.keep_min_solve_rate, DEFAULT.keep_max_solve_rate) == (0.125, 0.75)
    assert (DEFAULT.keep_min_median, DEFAULT.keep_max_median) == (0.1, 0.75)
    assert DEFAULT.distance_cap == 0.34
    assert MEDIAN.distance_cap == 1.5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"k": 0},
        {"round_size": 0},
        {"solve_threshold": -0.1},
        {"solve_threshold": math.nan},
        {"keep_min_solve_rate": 0.8, "keep_max_solve_rate": 0.5},
        {"keep_max_solve_rate": 1.5},
        {"keep_min_median": 1.0, "keep_max_median": 0.5},
        {"keep_max_median": math.inf},
        {"max_region_chars": 0},
    ],
)
def test_policy_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BandPolicy(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(kwargs), type=BandPolicy)


def test_decision_round_trips_with_its_policy() -> None:
    d = decide(solved_list(5), BandPolicy(k=16, solve_threshold=0.3))
    assert msgspec.json.decode(msgspec.json.encode(d), type=Decision) == d
    assert d.policy.solve_threshold == 0.3


# --------------------------------------------------------------------------- decide


@pytest.mark.parametrize(
    ("solved", "expected"),
    [
        (0, "too_hard"),
        (1, "too_hard"),  # 1/16 = 0.0625 < 0.125
        (2, "keep"),  # 2/16 = 0.125, inclusive
        (5, "keep"),
        (12, "keep"),  # 12/16 = 0.75, inclusive
        (13, "too_easy"),
        (16, "too_easy"),
    ],
)
def test_solve_rate_boundaries(solved: int, expected: str) -> None:
    d = decide(solved_list(solved))
    assert d.decision == expected
    assert (d.solved, d.samples_used, d.solve_rate) == (solved, 16, solved / 16)


def test_solve_threshold_is_inclusive() -> None:
    at = decide(solved_list(2, hit=0.34))
    assert at.decision == "keep" and at.solved == 2
    above = decide(solved_list(2, hit=math.nextafter(0.34, 1)))
    assert above.decision == "too_hard" and above.solved == 0


def test_reason_strings() -> None:
    assert decide(solved_list(5)).reason == (
        "5/16 samples within 0.34 of the user's edit size: solve rate 0.312 in [0.125, 0.75]"
    )
    assert decide(solved_list(13)).reason.endswith("solve rate 0.812 above [0.125, 0.75]")
    assert decide(solved_list(1)).reason.endswith("solve rate 0.0625 below [0.125, 0.75]")
    assert decide([0.5] * 16, MEDIAN).reason == "median normalised distance 0.5 over 16 samples in [0.1, 0.75]"


@pytest.mark.parametrize(
    ("values", "median", "expected"),
    [
        ([0.1] * 16, 0.1, "keep"),  # lower bound inclusive
        ([0.05] * 8 + [0.15] * 8, 0.1, "keep"),  # even k: mean of the middle two
        ([0.05] * 8 + [0.14] * 8, 0.095, "too_easy"),
        ([0.0] * 9 + [5.0] * 7, 0.0, "too_easy"),
        ([0.5] * 8 + [1.0] * 8, 0.75, "keep"),  # upper bound inclusive
        ([0.5] * 8 + [1.1] * 8, 0.8, "too_hard"),
        ([0.0] * 7 + [2.0] * 9, 2.0, "too_hard"),
        ([0.0, 0.8, 5.0], 0.8, "too_hard"),  # odd n: the middle value
        ([0.0, 0.3, 5.0], 0.3, "keep"),
    ],
)
def test_median_boundaries(values: list[float], median: float, expected: str) -> None:
    d = decide(values, MEDIAN)
    assert d.decision == expected
    assert d.median == pytest.approx(median)


def test_decide_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        decide([])
    with pytest.raises(ValueError):
        decide([0.1, math.nan])
    with pytest.raises(ValueError):
        decide([-0.1])


# --------------------------------------------------------------------------- screen


def example(original: str, settled: str, cursor: int = 0) -> SettledExample:
    return SettledExample(
        id="id",
        request_id="r",
        session_id="s",
        path="a.py",
        encoding="utf-8",
        requested_at_ms=0,
        settled_at_ms=1,
        original_text=original,
        settled_text=settled,
        cursor=cursor,
        context=PromptContext(),
    )


@pytest.mark.parametrize(
    ("original", "settled", "cursor", "expected", "reason_part"),
    [
        ("x = 1\n", "x = 1\n", 0, "unchanged", "equals the original"),
        ("", "", 0, "invalid", "empty region and empty settled text"),
        ("x" * 2049, "y", 0, "invalid", "exceeds max_region_chars=2048"),
        ("x", "y" * 2049, 0, "invalid", "exceeds max_region_chars"),
        ("x", "y", 5, "invalid", "cursor_out_of_range"),
        ("x", "<|output|>", 0, "invalid", "special_token_in_region"),
    ],
)
def test_screen_drops_before_sampling(
    original: str, settled: str, cursor: int, expected: str, reason_part: str
) -> None:
    d = screen(example(original, settled, cursor), DEFAULT)
    assert d is not None
    assert d.decision == expected and reason_part in d.reason
    assert d.samples_used == 0 and d.solve_rate is None and d.policy == DEFAULT


@pytest.mark.parametrize(("original", "settled"), [("x = 1\n", "x = 2\n"), ("", "new"), ("old", "")])
def test_screen_passes_real_edits(original: str, settled: str) -> None:
    assert screen(example(original, settled), DEFAULT) is None


# --------------------------------------------------------------------------- adaptive


class Sampler:
    """A callable sampler over pre-drawn values that records what was asked of it."""

    def __init__(self, values: Sequence[float]) -> None:
        self.values = list(values)
        self.used = 0
        self.asks: list[int] = []

    def __call__(self, n: int) -> list[float]:
        self.asks.append(n)
        out = self.values[self.used : self.used + n]
        self.used += n
        return out


def check_adaptive(values: Sequence[float], policy: BandPolicy) -> Decision:
    full = decide(values, policy)
    sampler = Sampler(values)
    adaptive = decide_adaptive(sampler, policy)
    assert adaptive.decision == full.decision, (values, policy, adaptive.reason, full.reason)
    assert adaptive.samples_used == sampler.used <= policy.k
    assert all(0 < n <= policy.round_size for n in sampler.asks)
    if adaptive.samples_used == policy.k:
        assert adaptive == full
    return adaptive


def test_adaptive_early_stop_example() -> None:
    # 2 solved in the first 8: the final count is in [2, 10], all inside [2, 12] of 16
    d = check_adaptive([0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0] + [0.0] * 8, DEFAULT)
    assert d.samples_used == 8 and d.decision == "keep"
    assert d.reason == (
        "2/8 samples within 0.34 of the user's edit size; stopped after 8 of 16: "
        "final count in [2, 10] of 16, keep whatever the rest"
    )
    assert (d.solved, d.solve_rate) == (2, 0.25)
    # 1 solved in 12: the final count could still be 1 (too hard) or 5 (keep)
    assert check_adaptive([0.0] + [1.0] * 15, DEFAULT).samples_used == 16


def test_adaptive_median_stops_on_order_statistics() -> None:
    # 8 samples at 2.0: even with eight perfect ones the median is (0 + 2) / 2 = 1.0 > 0.75
    d = check_adaptive([2.0] * 16, MEDIAN)
    assert d.decision == "too_hard" and d.samples_used == 8
    assert "final median in [1, inf]" in d.reason
    # 4 at 2.0 are not enough: twelve perfect ones would make the median 0
    assert check_adaptive([2.0] * 4 + [0.0] * 12, MEDIAN).decision == "too_easy"
    # 8 at 0.05 (< 0.1): the median is at most (0.05 + inf) / 2 = inf, so it stays open
    d = check_adaptive([0.05] * 12 + [1.0] * 4, MEDIAN)
    assert d.decision == "too_easy" and d.samples_used == 12
    assert "final median in [0.05, 0.05]" in d.reason


def test_adaptive_with_no_samples_needed() -> None:
    always = BandPolicy(keep_min_solve_rate=0.0, keep_max_solve_rate=1.0)
    d = decide_adaptive(Sampler([]), always)
    assert d.decision == "keep" and d.samples_used == 0 and d.solve_rate is None


def test_adaptive_accepts_pre_drawn_rounds() -> None:
    values = [0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0] + [0.0] * 8
    rounds = [values[:3], values[3:9], values[9:]]
    d = decide_adaptive(iter(rounds), DEFAULT)
    assert d.decision == "keep" and d.samples_used == 9  # drawn rounds count in full
    # a final round past k is cut at k
    assert decide_adaptive([[1.0] * 20], DEFAULT) == decide([1.0] * 16, DEFAULT)


def test_adaptive_input_errors() -> None:
    with pytest.raises(ValueError, match="asked for 4 samples, got 3"):
        decide_adaptive(lambda n: [1.0] * (n - 1), DEFAULT)
    with pytest.raises(ValueError, match="rounds ran out"):
        decide_adaptive([[1.0] * 4], DEFAULT)
    with pytest.raises(ValueError, match="empty round"):
        decide_adaptive([[]], DEFAULT)
    with pytest.raises(ValueError):
        decide_adaptive(lambda n: [math.nan] * n, DEFAULT)


def test_adaptive_exhaustive_outcomes_k12() -> None:
    """Every solved/unsolved pattern of 12 samples, for two round sizes."""
    for round_size in (3, 4):
        policy = BandPolicy(k=12, round_size=round_size)
        for bits in itertools.product((0.0, 1.0), repeat=12):
            check_adaptive(bits, policy)


def simulate(n_examples: int, seed: int, k: int = 16) -> list[list[float]]:
    """Per-example difficulty, then per-sample normalised distances (lognormal around it).

    The log-median difficulty spans 0.02..5 (near-perfect to hopeless), so the set
    has easy, hard and in-band examples; samples below 0.02 are taken as exact.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_examples):
        mu = rng.uniform(math.log(0.02), math.log(5.0))
        sigma = rng.uniform(0.3, 1.5)
        d = np.exp(rng.normal(mu, sigma, k))
        out.append([0.0 if x < 0.02 else float(x) for x in d])
    return out


@pytest.mark.parametrize("policy", [DEFAULT, MEDIAN], ids=["solve_rate", "median"])
def test_adaptive_matches_full_on_simulated_examples(policy: BandPolicy) -> None:
    examples = simulate(4000, seed=20240611, k=policy.k)
    used_adaptive = used_full = 0
    decisions: Counter[str] = Counter()
    saved_by: Counter[str] = Counter()
    for values in examples:
        full = decide(values, policy)
        adaptive = check_adaptive(values, policy)
        used_full += full.samples_used
        used_adaptive += adaptive.samples_used
        decisions[full.decision] += 1
        saved_by[full.decision] += policy.k - adaptive.samples_used
    n = len(examples)
    print(
        f"\n[{policy.mode}] {n} simulated examples, k={policy.k}, round_size={policy.round_size}: "
        f"average samples full={used_full / n:.2f} adaptive={used_adaptive / n:.2f}; "
        f"decisions {dict(sorted(decisions.items()))}; "
        f"average saved by decision "
        f"{ {d: round(saved_by[d] / decisions[d], 2) for d in sorted(decisions)} }"
    )
    assert used_full == n * policy.k
    assert used_adaptive < used_full


@st.composite
def policies(draw: st.DrawFn) -> BandPolicy:
    k = draw(st.integers(1, 20))
    lo, hi = sorted(draw(st.lists(st.sampled_from([0.0, 0.1, 0.125, 0.25, 1 / 3, 0.5, 0.75, 1.0]), min_size=2, max_size=2)))
    mlo, mhi = sorted(draw(st.lists(st.sampled_from([0.0, 0.1, 0.34, 0.5, 0.75, 1.0, 2.0]), min_size=2, max_size=2)))
    return BandPolicy(
        mode=draw(st.sampled_from(["solve_rate", "median"])),
        k=k,
        round_size=draw(st.integers(1, k + 2)),
        solve_threshold=draw(st.sampled_from([0.0, 0.1, 0.34, 0.5, 1.0])),
        keep_min_solve_rate=lo,
        keep_max_solve_rate=hi,
        keep_min_median=mlo,
        keep_max_median=mhi,
    )


# values that sit exactly on the thresholds above, plus arbitrary ones
distances = st.one_of(
    st.sampled_from([0.0, 0.1, 0.34, 0.5, 0.75, 1.0, 2.0, 1e9]),
    st.floats(min_value=0.0, max_value=10.0, allow_nan=False),
)


@settings(max_examples=400, deadline=None)
@given(policy=policies(), data=st.data())
def test_adaptive_never_differs_from_full(policy: BandPolicy, data: st.DataObject) -> None:
    values = data.draw(st.lists(distances, min_size=policy.k, max_size=policy.k))
    adaptive = check_adaptive(values, policy)
    # pre-drawn rounds of arbitrary sizes give the same decision too
    cuts = sorted(data.draw(st.lists(st.integers(1, policy.k - 1), max_size=4, unique=True))) if policy.k > 1 else []
    bounds = [0, *cuts, policy.k]
    rounds = [values[a:b] for a, b in itertools.pairwise(bounds)]
    assert decide_adaptive(rounds, policy).decision == adaptive.decision


@settings(max_examples=80, deadline=None)
@given(
    policy=policies(),
    original=st.text("ab c", max_size=10),
    settled=st.text("ab c", max_size=10),
    data=st.data(),
)
def test_distance_cap_never_changes_a_decision(
    policy: BandPolicy, original: str, settled: str, data: st.DataObject
) -> None:
    samples = data.draw(st.lists(st.text("ab c", max_size=14), min_size=policy.k, max_size=policy.k))
    plain = sample_distances(samples, original, settled)
    capped = sample_distances(samples, original, settled, cap=policy.distance_cap)
    assert decide(capped.normalised, policy).decision == decide(plain.normalised, policy).decision


def test_calibrate_puts_the_band_on_the_students_own_quantiles() -> None:
    from settle.streams.scoring.band import calibrate, decide

    medians = [0.5, 0.9, 1.0, 1.1, 1.2, 1.5, 2.0, 3.0, math.inf]
    policy = calibrate(medians, BandPolicy(k=4), easy=0.25, hard=0.75)
    # 9 values, indices round(0.25*8)=2 and round(0.75*8)=6: 1.0 and 2.0
    assert (policy.mode, policy.keep_min_median, policy.keep_max_median, policy.k) == ("median", 1.0, 2.0, 4)
    assert decide([0.5] * 4, policy).decision == "too_easy"
    assert decide([1.5] * 4, policy).decision == "keep"
    assert decide([2.5] * 4, policy).decision == "too_hard"


def test_calibrate_refuses_too_little_data() -> None:
    from settle.streams.scoring.band import calibrate

    with pytest.raises(ValueError, match="at least 2 finite"):
        calibrate([1.0, math.inf])
    with pytest.raises(ValueError, match="easy < hard"):
        calibrate([1.0, 2.0], easy=0.8, hard=0.2)
