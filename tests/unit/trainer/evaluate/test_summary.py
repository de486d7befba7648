"""Rows from examples, per-row scores and the summary the gate reads.
"""

from __future__ import annotations

import msgspec
import pytest

from settle.schemas.events import EditStep, PromptContext
from settle.schemas.examples import SettledExample
from settle.trainer.evaluate.summary import EvalRow, EvalSummary, row_from_example, score_row, summarize

# ---------------------------------------------------------------------------------------------
# Rows and summary


def test_row_from_example() -> None:
    ex = SettledExample(
        id="e1",
        request_id="r1",
        session_id="s",
        path="a.py",
        encoding="utf-16",
        requested_at_ms=1,
        settled_at_ms=2,
        original_text="ifrom m import x\n",
        settled_text="from m import x\n",
        cursor=1,
        context=PromptContext(edit_history=[EditStep("a.py", "from", "ifrom")]),
    )
    row = row_from_example(ex, "from m import x\n")
    assert row == EvalRow(
        original="ifrom m import x\n",
        settled="from m import x\n",
        prediction="from m import x\n",
        before="from m import x\n",
    )
    s = score_row(row)
    assert s.parsed and s.exact_match and s.has_before
    assert s.delta_chrf == 100.0
    assert s.reversal_ratio == 1.0  # undoes the "i" the user had just typed (Zed counts it regardless)



def test_summarize() -> None:
    rows = [
        # exact: delta 100, reversal 0 (no known edit)
        EvalRow(original="ab", settled="abc", prediction="abc"),
        # unparsed -> scored as "ab" (do nothing): delta 50 (see above), not exact
        EvalRow(original="ab", settled="abc", prediction=None),
        # exact and undoes the typed "i": delta 100, reversal 1
        EvalRow(original="ifrom", settled="from", prediction="from", before="from"),
        # only trailing whitespace: exact only after normalising. delta: the user changed nothing,
        # the prediction added " " -> after collapsing "x\n" -> "x \n": n=1..3 have actual n-grams
        # and no expected ones (P=R=0), n=4..6 are empty on both sides (1) -> P=R=1/2 -> 50
        EvalRow(original="x\n", settled="x\n", prediction="x  \n"),
    ]
    s = summarize(rows)
    assert s == EvalSummary(
        count=4,
        parsed=3,
        parse_rate=0.75,
        delta_chrf=pytest.approx((100 + 50 + 100 + 50) / 4),
        reversal_ratio=pytest.approx(1 / 4),
        exact_match_rate=0.5,
        exact_match_normalized_rate=0.75,
        reversal_rows=1,
        # kept/recall per row (Zed's kept rate, units "ab", "abc", ...): 1/1; unparsed = unchanged while
        # the user edited: 0/0; "ifrom" -> "from" as the user did: 1/1; added "  " the user never
        # wrote: kept 0 of 2 bytes, recall 0 (the user changed nothing)
        kept_rate=pytest.approx(0.5),
        recall_rate=pytest.approx(0.5),
    )
    empty = summarize([])
    assert empty.count == 0 and empty.delta_chrf == 0.0 and empty.parse_rate == 0.0
    # round-trips as JSON
    assert msgspec.json.decode(msgspec.json.encode(s), type=EvalSummary) == s


def test_kept_rate_per_row_beside_delta_chrf() -> None:
    # original "foo(a)\n", the model adds ", b, c" (6 bytes), the user kept ", c" (3 of them): kept 3/6,
    # and the model had all 3 bytes the user added: recall 3/3 (see tests/unit/streams/scoring/test_kept_rate.py)
    s = score_row(EvalRow(original="foo(a)\n", settled="foo(a, c)\n", prediction="foo(a, b, c)\n"))
    assert s.kept_rate == pytest.approx(0.5) and s.recall_rate == 1.0
    assert summarize([EvalRow(original="foo(a)\n", settled="foo(a, c)\n", prediction=None)]).kept_rate == 0.0
