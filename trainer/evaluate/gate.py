"""The publish gate: a new model is published only if it is not worse than the current one.

Its own module because it is policy, not measurement: which metrics count, in which direction, and
how much slack each gets (``GateTolerance``). It compares two ``EvalSummary`` of the same held-out set.
"""

from __future__ import annotations

from msgspec import Struct

from settle.trainer.evaluate.summary import EvalSummary

__all__ = ["DEFAULT_TOLERANCE", "GateTolerance", "compare"]


class GateTolerance(Struct, frozen=True, kw_only=True):
    """How much worse than the current model a new one may be on each metric and still publish.

    ``delta_chrf`` is in chrF points (0..100); the others are absolute rates (0..1).
    """

    delta_chrf: float = 1.0
    parse_rate: float = 0.01
    reversal_ratio: float = 0.01
    exact_match_rate: float = 0.02


DEFAULT_TOLERANCE = GateTolerance()
_EPS = 1e-9  # float slack so "exactly at the tolerance" passes


def compare(
    new: EvalSummary,
    current: EvalSummary,
    *,
    tolerance: GateTolerance = DEFAULT_TOLERANCE,
) -> tuple[bool, str]:
    """The publishing gate: is ``new`` not worse than ``current`` on the same held-out set?

    ``new`` passes iff both summaries are non-empty, have the same ``count`` (they must come from
    the same held-out set), and every one of these holds:

    * ``new.delta_chrf       >= current.delta_chrf       - tolerance.delta_chrf``
    * ``new.parse_rate       >= current.parse_rate       - tolerance.parse_rate``
    * ``new.reversal_ratio   <= current.reversal_ratio   + tolerance.reversal_ratio``
    * ``new.exact_match_rate >= current.exact_match_rate - tolerance.exact_match_rate``

    Returns ``(passed, reason)``; the reason names every failed check, or lists all values when it
    passes.
    """
    if new.count == 0 or current.count == 0:
        return False, f"empty evaluation set (new n={new.count}, current n={current.count})"
    if new.count != current.count:
        return False, (
            f"not comparable: evaluated on different held-out sets (new n={new.count}, "
            f"current n={current.count})"
        )
    checks = [
        # name, new, current, tolerance, higher_is_better, format
        ("delta-chrF", new.delta_chrf, current.delta_chrf, tolerance.delta_chrf, True, "{:.2f}"),
        ("parse rate", new.parse_rate, current.parse_rate, tolerance.parse_rate, True, "{:.2%}"),
        ("reversal ratio", new.reversal_ratio, current.reversal_ratio, tolerance.reversal_ratio, False, "{:.3f}"),
        ("exact match", new.exact_match_rate, current.exact_match_rate, tolerance.exact_match_rate, True, "{:.2%}"),
    ]
    failures: list[str] = []
    lines: list[str] = []
    for name, a, b, tol, higher, fmt in checks:
        ok = a >= b - tol - _EPS if higher else a <= b + tol + _EPS
        lines.append(f"{name} {fmt.format(a)} vs {fmt.format(b)}")
        if not ok:
            bound = b - tol if higher else b + tol
            word = "below" if higher else "above"
            failures.append(
                f"{name} {fmt.format(a)} is {word} the allowed {fmt.format(bound)} "
                f"(current {fmt.format(b)}, tolerance {fmt.format(tol)})"
            )
    if failures:
        return False, f"worse than current (n={new.count}): " + "; ".join(failures)
    return True, f"not worse than current (n={new.count}): " + "; ".join(lines)
