"""The band policy: which settled examples are worth training the student on.

Each example gets k student samples, each scored by its normalised distance to
the settled text (:mod:`settle.streams.scoring.distance`; 1.0 = no better than not
editing). Examples the student already solves almost always teach it nothing
(``too_easy``); ones it almost never gets near are mostly noise or beyond it
(``too_hard``). The middle band is kept.

Two modes:

* ``solve_rate`` (default): a sample *solves* the example when its normalised
  distance is ``<= solve_threshold``; keep when the share of solving samples
  lies in ``[keep_min_solve_rate, keep_max_solve_rate]``, ``too_easy`` above,
  ``too_hard`` below.
* ``median``: keep when the median normalised distance lies in
  ``[keep_min_median, keep_max_median]``, ``too_easy`` below, ``too_hard`` above.

Both outcomes are monotone in every sample's distance (a worse sample never
makes an example easier), ordered ``too_easy < keep < too_hard``. So with some
samples still to draw, the final decision lies between the decision with all
the missing samples perfect (distance 0) and with all of them hopeless
(distance +inf); when those two agree nothing left can change it, and
:func:`decide_adaptive` stops. That is exact, not a statistical test: the
adaptive decision always equals :func:`decide` on all k samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import msgspec

from settle.schemas.examples import SettledExample
from settle.schemas.scored import BandPolicy, Decision, DecisionKind, Mode
from settle.streams.contracts.prompt import UnrenderableExample, check_renderable

__all__ = [
    "Mode",
    "DecisionKind",
    "BandPolicy",
    "Decision",
    "screen",
    "decide",
    "decide_adaptive",
    "decision_is_final",
    "calibrate",
]

_Band = Literal["too_easy", "keep", "too_hard"]


# --------------------------------------------------------------------------- screening


def screen(example: SettledExample, policy: BandPolicy) -> Decision | None:
    """Decide before sampling: ``invalid`` or ``unchanged``, or None when it needs samples."""

    def drop(kind: DecisionKind, reason: str) -> Decision:
        return Decision(decision=kind, reason=reason, policy=policy)

    original, settled = example.original_text, example.settled_text
    if not original and not settled:
        return drop("invalid", "empty region and empty settled text: nothing to predict")
    longest = max(len(original), len(settled))
    if longest > policy.max_region_chars:
        return drop("invalid", f"region of {longest} chars exceeds max_region_chars={policy.max_region_chars}")
    try:
        check_renderable(example)
    except UnrenderableExample as e:
        return drop("invalid", str(e))
    if settled == original:
        return drop("unchanged", "settled text equals the original region: the user kept it as it was")
    return None


# --------------------------------------------------------------------------- deciding


def _check_values(values: Sequence[float]) -> None:
    for x in values:
        if not x >= 0:  # also rejects NaN
            raise ValueError(f"normalised distances must be >= 0, got {x!r}")


def _median(ordered: Sequence[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _band_of_count(solved: int, n: int, policy: BandPolicy) -> _Band:
    rate = solved / n
    if rate > policy.keep_max_solve_rate:
        return "too_easy"
    if rate < policy.keep_min_solve_rate:
        return "too_hard"
    return "keep"


def _band_of_median(median: float, policy: BandPolicy) -> _Band:
    if median < policy.keep_min_median:
        return "too_easy"
    if median > policy.keep_max_median:
        return "too_hard"
    return "keep"


def _count_solved(values: Iterable[float], policy: BandPolicy) -> int:
    return sum(1 for x in values if x <= policy.solve_threshold)


def _where(band: _Band) -> str:
    return {"too_easy": "above", "keep": "in", "too_hard": "below"}[band]


def decide(normalised_distances: Sequence[float], policy: BandPolicy = BandPolicy()) -> Decision:
    """Decide on a full set of samples (normally ``policy.k`` of them; any n >= 1 works).

    Rates and medians are over the samples given, so the same rule applies when
    some generations failed and fewer than k came back.
    """
    values = list(normalised_distances)
    if not values:
        raise ValueError("decide needs at least one sample")
    _check_values(values)
    n = len(values)
    solved = _count_solved(values, policy)
    median = _median(sorted(values))
    if policy.mode == "solve_rate":
        band = _band_of_count(solved, n, policy)
        reason = (
            f"{solved}/{n} samples within {policy.solve_threshold:g} of the user's edit size: "
            f"solve rate {solved / n:.3g} {_where(band)} "
            f"[{policy.keep_min_solve_rate:g}, {policy.keep_max_solve_rate:g}]"
        )
    else:
        band = _band_of_median(median, policy)
        where = {"too_easy": "below", "keep": "in", "too_hard": "above"}[band]
        reason = (
            f"median normalised distance {median:.3g} over {n} samples {where} "
            f"[{policy.keep_min_median:g}, {policy.keep_max_median:g}]"
        )
    return Decision(
        decision=band,
        reason=reason,
        samples_used=n,
        solved=solved,
        solve_rate=solved / n,
        median=median,
        policy=policy,
    )


def _settled_band(seen: list[float], policy: BandPolicy) -> tuple[_Band, str] | None:
    """The final band if no remaining sample can change it, with the bounds that prove it."""
    k = policy.k
    remaining = k - len(seen)
    if policy.mode == "solve_rate":
        solved = _count_solved(seen, policy)
        # final solved count lies in [solved, solved + remaining]
        lo, hi = _band_of_count(solved + remaining, k, policy), _band_of_count(solved, k, policy)
        if lo != hi:
            return None
        return lo, f"final count in [{solved}, {solved + remaining}] of {k}"
    ordered = sorted(seen)
    # order statistics of the final k: missing samples all 0 (best) or all +inf (worst)
    best = _median([0.0] * remaining + ordered)
    worst = _median(ordered + [math.inf] * remaining)
    lo, hi = _band_of_median(best, policy), _band_of_median(worst, policy)
    if lo != hi:
        return None
    return lo, f"final median in [{best:.3g}, {worst:.3g}]"


def decide_adaptive(
    sample_round: Callable[[int], Sequence[float]] | Iterable[Sequence[float]],
    policy: BandPolicy = BandPolicy(),
) -> Decision:
    """Draw samples in rounds of ``policy.round_size`` and stop once the decision is fixed.

    ``sample_round`` is either a callable taking how many samples to draw (at
    most ``round_size``; the last round may be shorter so the total never
    exceeds k) and returning exactly that many normalised distances, or an
    iterable of already-drawn rounds (a final round past k is truncated). The
    decision always equals ``decide`` on all k samples; ``samples_used`` counts
    samples actually drawn, and the statistics cover only those.
    """
    k = policy.k
    seen: list[float] = []
    rounds = None if callable(sample_round) else iter(sample_round)
    while True:
        settled = _settled_band(seen, policy)
        if settled is not None:
            break
        want = min(policy.round_size, k - len(seen))
        if rounds is None:
            got = list(sample_round(want))  # type: ignore[operator]
            if len(got) != want:
                raise ValueError(f"asked for {want} samples, got {len(got)}")
        else:
            nxt = next(rounds, None)
            if nxt is None:
                raise ValueError(f"rounds ran out after {len(seen)} of {k} samples with the decision open")
            got = list(nxt)[: k - len(seen)]
            if not got:
                raise ValueError("empty round")
        _check_values(got)
        seen.extend(got)

    band, bounds = settled
    n = len(seen)
    if n == k:
        return decide(seen, policy)
    solved = _count_solved(seen, policy)
    if not seen:
        head = "no samples needed"
    elif policy.mode == "solve_rate":
        head = f"{solved}/{n} samples within {policy.solve_threshold:g} of the user's edit size"
    else:
        head = f"median normalised distance {_median(sorted(seen)):.3g} over {n} samples"
    return Decision(
        decision=band,
        reason=f"{head}; stopped after {n} of {k}: {bounds}, {band} whatever the rest",
        samples_used=n,
        solved=solved if seen else None,
        solve_rate=solved / n if seen else None,
        median=_median(sorted(seen)) if seen else None,
        policy=policy,
    )


def decision_is_final(seen: Sequence[float], policy: BandPolicy) -> bool:
    """True when no further sample can change the decision (or k samples are in).

    Lets a batched scorer stop sampling one example while others in the same
    batch go on; the decision itself then comes from :func:`decide_adaptive`
    over the same rounds.
    """
    return len(seen) >= policy.k or _settled_band(list(seen), policy) is not None


def calibrate(medians: Sequence[float], base: BandPolicy = BandPolicy(), *, easy: float = 0.25, hard: float = 0.75) -> BandPolicy:
    """A median-mode policy whose band is the ``easy``..``hard`` quantiles of a student's medians.

    The default thresholds assume a student that often beats "not editing"; a
    small or young student may never do so, and then every example is
    ``too_hard``. Calibrating on the student's own median normalised distances
    keeps the examples that are middling *for this student*: the easiest
    quarter is too easy, the hardest quarter too hard (with the defaults).
    Infinite medians (unparseable majorities) count as hardest.
    """
    if not 0 <= easy < hard <= 1:
        raise ValueError(f"need 0 <= easy < hard <= 1, got {easy}, {hard}")
    finite = sorted(m for m in medians if math.isfinite(m))
    if len(finite) < 2:
        raise ValueError(f"need at least 2 finite medians to calibrate, got {len(finite)}")
    ordered = finite + [math.inf] * (len(medians) - len(finite))

    def quantile(q: float) -> float:
        value = ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]
        return value if math.isfinite(value) else finite[-1]

    low, high = quantile(easy), quantile(hard)
    return msgspec.structs.replace(base, mode="median", keep_min_median=low, keep_max_median=max(low, high))
