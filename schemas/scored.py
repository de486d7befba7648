"""Records the scorer writes: every decision on `scored`, the kept ones on `kept`.

The band policy lives here, not with the scorer, because it is part of the
record: every decision carries the exact rule (thresholds, k) that made it.
"""

from __future__ import annotations

import math
from typing import Literal

from msgspec import Struct

from .examples import SettledExample

#: prompt budget in characters (about 2k tokens), shared by scorer and trainer
DEFAULT_MAX_CHARS = 8192


Mode = Literal["solve_rate", "median"]
DecisionKind = Literal["keep", "too_easy", "too_hard", "unchanged", "invalid"]


class BandPolicy(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Frozen, recorded on every :class:`Decision` so a kept set can be traced to its rule.

    Defaults are a starting point to calibrate against the student, not truths.
    """

    v: Literal[1] = 1
    mode: Mode = "solve_rate"
    #: samples per example when deciding on all of them
    k: int = 16
    #: samples drawn per round by :func:`decide_adaptive`
    round_size: int = 4
    #: a sample solves the example when its normalised distance is <= this:
    #: it got roughly two thirds of the user's edit right
    solve_threshold: float = 0.34
    #: keep when solved/k >= this (2 of 16: one lucky sample is not "sometimes")
    keep_min_solve_rate: float = 0.125
    #: keep when solved/k <= this (12 of 16: above, the student already has it)
    keep_max_solve_rate: float = 0.75
    #: median mode: below this the typical sample is near-perfect (too easy)
    keep_min_median: float = 0.1
    #: median mode: above this the typical sample gets little of the edit right;
    #: below 1.0 so that "typically no better than not editing" is too hard
    keep_max_median: float = 0.75
    #: longer original or settled regions are ``invalid``: past the student's
    #: output budget, and their distances are dominated by length
    max_region_chars: int = 2048
    #: prompt budget the scorer and trainer render with (``render_prompt(max_chars=)``)
    max_prompt_chars: int = DEFAULT_MAX_CHARS

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.round_size < 1:
            raise ValueError(f"round_size must be >= 1, got {self.round_size}")
        if not (0 <= self.solve_threshold < math.inf):
            raise ValueError(f"solve_threshold must be finite and >= 0, got {self.solve_threshold}")
        if not (0 <= self.keep_min_solve_rate <= self.keep_max_solve_rate <= 1):
            raise ValueError(
                "need 0 <= keep_min_solve_rate <= keep_max_solve_rate <= 1, got "
                f"{self.keep_min_solve_rate}, {self.keep_max_solve_rate}"
            )
        if not (0 <= self.keep_min_median <= self.keep_max_median < math.inf):
            raise ValueError(
                "need 0 <= keep_min_median <= keep_max_median < inf, got "
                f"{self.keep_min_median}, {self.keep_max_median}"
            )
        if self.max_region_chars < 1 or self.max_prompt_chars < 1:
            raise ValueError("max_region_chars and max_prompt_chars must be >= 1")

    @property
    def distance_cap(self) -> float:
        """Normalised distance above which exact values cannot change a decision.

        Pass to ``sample_distances(cap=)``. Solve-rate mode only asks "<= solve_threshold?".
        The median of an even k averages two order statistics, so one middle value
        above ``2 * keep_max_median`` already puts the median above the band
        whatever the other (>= 0) is.
        """
        return self.solve_threshold if self.mode == "solve_rate" else 2 * self.keep_max_median


class Decision(Struct, frozen=True, kw_only=True):
    """What happened to one example, and why, with the policy that decided it."""

    v: Literal[1] = 1
    decision: DecisionKind
    #: human-readable, e.g. "5/16 samples within 0.34 of the user's edit size ..."
    reason: str
    samples_used: int = 0
    #: solving samples among those used (None before sampling)
    solved: int | None = None
    #: solved / samples_used; with an early stop this is the rate so far, not over k
    solve_rate: float | None = None
    #: median normalised distance of the samples used
    median: float | None = None
    policy: BandPolicy


class ScoredExample(Struct, frozen=True, kw_only=True):
    """A settled example with the student's samples, their distances and the decision.

    Deterministic for a given model version and seed, so a re-scored example
    after a crash is a byte-identical repeat; where ``batch_invariant`` is True that
    holds whatever batch either was scored in.
    """

    v: Literal[1] = 1
    id: str
    example: SettledExample
    decision: Decision
    #: parsed region texts of the samples drawn (unparseable ones as raw text)
    samples: list[str] = []
    #: Levenshtein to the settled text; None for an unparseable sample. Values whose
    #: normalised distance exceeds ``decision.policy.distance_cap`` are lower bounds.
    distances: list[int | None] = []
    #: distance / max(1, user_edit_distance): 1.0 = no better than not editing
    normalised: list[float | None] = []
    #: Levenshtein(original region, settled text): the user's own edit size
    user_edit_distance: int = 0
    #: samples whose output did not parse, by reason (they count as hopeless)
    parse_failures: dict[str, int] = {}
    model_name: str = ""
    model_version: str = ""
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    #: tokens kept per step before top-p; 0 = the whole vocabulary (records before top-k: 0)
    top_k: int = 0
    max_new_tokens: int = 0
    #: True: the samples did not depend on the batch the example was scored in (ONNX Runtime on
    #: CPU decodes each example with shapes of its own), so a repeat of this example with the same
    #: model version and seed (a replay, a re-score after a crash) is a byte-identical record.
    #: False: the backend does not promise it (CUDA: kernels pick algorithms by batch shape; also
    #: every record from before this field): a repeat can draw other samples and, near a band
    #: edge, decide otherwise. Consumers dedupe on id and keep the first record, so such a
    #: repeat never contradicts a decision already on `kept`.
    batch_invariant: bool = False
