"""Score held-out rows and average them into the ``EvalSummary`` the gate and the registry read.

Its own module because it is the one place that says how a model's output on one example becomes
numbers: an output that does not parse counts as unparsed and is scored as the unchanged region
(as Zed's ``src/prediction_score.rs`` scores an unappliable patch), and the summary is plain means
over examples (Zed's ``src/summary.rs``). Metric definitions live in ``chrf``, ``reversal`` and
``exact_match``; the kept rate and recall rate are Zed's, computed by ``settle.streams.scoring.kept_rate``
(the same function that records a production prediction's kept rate on every settled example).
"""

from __future__ import annotations

from collections.abc import Iterable

from msgspec import Struct

from settle.schemas.examples import SettledExample
from settle.streams.scoring.kept_rate import compute_kept_rate
from settle.trainer.evaluate.chrf import delta_chrf
from settle.trainer.evaluate.exact_match import exact_match
from settle.trainer.evaluate.reversal import reversal_ratio, text_before_last_edit

__all__ = ["EvalRow", "EvalSummary", "RowScore", "row_from_example", "score_row", "summarize"]


class EvalRow(Struct, frozen=True, kw_only=True):
    """One held-out example with a model's output.

    ``prediction`` is ``None`` when the output did not parse into a region; such a row counts as
    unparsed and is scored as if the model had returned ``original`` unchanged (what the editor
    would show: nothing), as Zed scores an unappliable patch as the unchanged text.
    """

    original: str
    settled: str
    prediction: str | None
    #: the region before the user's most recent edit (for the reversal ratio), if known
    before: str | None = None


def row_from_example(example: SettledExample, prediction: str | None) -> EvalRow:
    """An ``EvalRow`` for ``example``, with ``before`` reconstructed from its edit history."""
    return EvalRow(
        original=example.original_text,
        settled=example.settled_text,
        prediction=prediction,
        before=text_before_last_edit(example.original_text, example.context.edit_history, example.path),
    )


class RowScore(Struct, frozen=True, kw_only=True):
    parsed: bool
    delta_chrf: float
    reversal_ratio: float
    exact_match: bool
    exact_match_normalized: bool
    has_before: bool
    #: Zed's kept rate and recall rate of the output (base: original, reference: settled)
    kept_rate: float = 0.0
    recall_rate: float = 0.0


def score_row(row: EvalRow) -> RowScore:
    text = row.original if row.prediction is None else row.prediction
    kept = compute_kept_rate(row.original, text, row.settled)
    return RowScore(
        parsed=row.prediction is not None,
        delta_chrf=delta_chrf(row.original, text, row.settled),
        reversal_ratio=reversal_ratio(row.original, text, row.settled, before=row.before),
        exact_match=exact_match(text, row.settled),
        exact_match_normalized=exact_match(text, row.settled, normalized=True),
        has_before=row.before is not None and row.before != row.original,
        kept_rate=kept.kept_rate,
        recall_rate=kept.recall_rate,
    )


class EvalSummary(Struct, frozen=True, kw_only=True):
    """Means over a held-out set (all 0.0 for an empty set).

    ``delta_chrf`` is in [0, 100]; the others in [0, 1]. ``reversal_ratio`` is the mean over *all*
    rows, rows without a known user edit contributing 0.0 (as in Zed's summary);
    ``reversal_rows`` says how many rows had one.
    """

    count: int
    parsed: int
    parse_rate: float
    delta_chrf: float
    reversal_ratio: float
    exact_match_rate: float
    exact_match_normalized_rate: float
    reversal_rows: int
    #: mean of Zed's kept rate (of what the model changed, how much the user kept) and recall rate (of what
    #: the user changed, how much the model had), in [0, 1]; an unparsed row counts as the unchanged region
    kept_rate: float = 0.0
    recall_rate: float = 0.0


def summarize(rows: Iterable[EvalRow]) -> EvalSummary:
    """Score every row (``score_row``) and average. Sums run in input order, so the result is
    deterministic for a given row order (and equal up to float rounding for any order)."""
    n = parsed = exact = exact_norm = with_before = 0
    sum_delta = sum_rev = sum_kept = sum_recall = 0.0
    for row in rows:
        s = score_row(row)
        n += 1
        parsed += s.parsed
        exact += s.exact_match
        exact_norm += s.exact_match_normalized
        with_before += s.has_before
        sum_delta += s.delta_chrf
        sum_rev += s.reversal_ratio
        sum_kept += s.kept_rate
        sum_recall += s.recall_rate
    if n == 0:
        return EvalSummary(
            count=0,
            parsed=0,
            parse_rate=0.0,
            delta_chrf=0.0,
            reversal_ratio=0.0,
            exact_match_rate=0.0,
            exact_match_normalized_rate=0.0,
            reversal_rows=0,
        )
    return EvalSummary(
        count=n,
        parsed=parsed,
        parse_rate=parsed / n,
        delta_chrf=sum_delta / n,
        reversal_ratio=sum_rev / n,
        exact_match_rate=exact / n,
        exact_match_normalized_rate=exact_norm / n,
        reversal_rows=with_before,
        kept_rate=sum_kept / n,
        recall_rate=sum_recall / n,
    )
