"""How far each student sample lands from what the user actually settled on.

Distances are character (code point) Levenshtein distances from rapidfuzz. The
normalised distance divides by the user's own edit size,
``distance(original, settled)``, so 1.0 means "no better than leaving the region
as it was" whatever the region length, and 0.0 means the sample is exactly the
settled text. That makes one band policy fit regions of every size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from msgspec import Struct
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

__all__ = ["SampleDistances", "levenshtein", "normalise", "sample_distances"]


class SampleDistances(Struct, frozen=True, kw_only=True):
    """Distances of one example's samples to its settled text."""

    #: distance(original_text, settled_text): the user's own edit size
    user_edit_distance: int
    #: distance(sample, settled_text), one per sample, in sample order
    distances: list[int]
    #: distances[i] / max(1, user_edit_distance)
    normalised: list[float]
    #: when set, a raw distance above it was not computed exactly: it is reported
    #: as ``capped_at + 1``, a lower bound (see ``cap`` in :func:`sample_distances`)
    capped_at: int | None = None


def levenshtein(a: str, b: str) -> int:
    """Unit-cost insert/delete/substitute distance over code points."""
    return Levenshtein.distance(a, b)


def normalise(distance: int, user_edit_distance: int) -> float:
    """``distance / max(1, user_edit_distance)``.

    With a zero-edit example (settled == original) the denominator is 1, so the
    value is the raw distance; such examples are dropped before sampling anyway
    (decision ``unchanged``), this only keeps the function total.
    """
    return distance / max(1, user_edit_distance)


def sample_distances(
    samples: Sequence[str],
    original: str,
    settled: str,
    *,
    cap: float | None = None,
    workers: int = 1,
) -> SampleDistances:
    """Distance of every sample to ``settled``, raw and normalised by the user's edit size.

    ``cap`` is a normalised distance above which exact values do not matter to
    the caller (``BandPolicy.distance_cap``): rapidfuzz then stops early on far
    samples (``score_cutoff``), which is most of the work when a sample rambles.
    A capped sample still normalises to strictly more than ``cap``; values at or
    below the cap are exact. ``workers`` is passed to ``process.cdist`` (-1: all
    cores) when there is more than one sample.
    """
    user_edit = Levenshtein.distance(original, settled)
    cutoff: int | None = None
    if cap is not None:
        if not cap >= 0 or math.isinf(cap):
            raise ValueError(f"cap must be a finite non-negative number, got {cap}")
        # +1 slack so float rounding in cap * user_edit can never cut an exact value
        # at or below the cap; a capped value is cutoff + 1 >= floor(cap*edit) + 2.
        cutoff = math.floor(cap * max(1, user_edit)) + 1
    if len(samples) == 1:
        distances = [Levenshtein.distance(samples[0], settled, score_cutoff=cutoff)]
    elif samples:
        matrix = process.cdist(
            list(samples),
            [settled],
            scorer=Levenshtein.distance,
            score_cutoff=cutoff,
            workers=workers,
            dtype=np.int64,
        )
        distances = [int(d) for d in matrix[:, 0]]
    else:
        distances = []
    return SampleDistances(
        user_edit_distance=user_edit,
        distances=distances,
        normalised=[normalise(d, user_edit) for d in distances],
        capped_at=cutoff,
    )
