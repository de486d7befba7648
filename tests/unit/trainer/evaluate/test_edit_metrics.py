"""Held-out eval metrics: chrF, delta-chrF, reversal ratio, exact match, summary and the gate.

Expected values are worked out by hand in the comments. Notation: ``G_n(s)`` is the multiset of
character n-grams of ``s``; chrF averages precision/recall over orders and takes F-beta:
``F = (1 + b²)·P·R / (b²·P + R)``.
"""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settle.schemas.events import EditStep, PromptContext
from settle.schemas.examples import SettledExample
from settle.trainer.evaluate.edit_metrics import (
    DEFAULT_TOLERANCE,
    EvalRow,
    EvalSummary,
    GateTolerance,
    _collapse_whitespace,
    _reversal_counts,
    chrf,
    compare,
    delta_chrf,
    exact_match,
    normalize_for_match,
    reversal_ratio,
    row_from_example,
    score_row,
    summarize,
    text_before_last_edit,
)

# ---------------------------------------------------------------------------------------------
# chrF


def test_chrf_one_substitution() -> None:
    # hyp "abc", ref "abd" (char_order 6, beta 2):
    #   n=1: G={a,b,c} vs {a,b,d}: match 2 -> P=2/3, R=2/3
    #   n=2: {ab,bc} vs {ab,bd}:  match 1 -> P=1/2, R=1/2
    #   n=3: {abc} vs {abd}:      match 0 -> P=0,   R=0
    #   n=4..6: no n-grams -> not effective; 3 effective orders
    #   P = R = (2/3 + 1/2 + 0)/3 = 7/18; with P == R, F = 5P²/5P = P = 7/18
    assert chrf("abc", "abd") == pytest.approx(100 * 7 / 18)


def test_chrf_precision_recall_differ() -> None:
    # hyp "ab", ref "abc":
    #   n=1: {a,b} vs {a,b,c}: match 2 -> P=1, R=2/3
    #   n=2: {ab} vs {ab,bc}:  match 1 -> P=1, R=1/2
    #   n=3: hyp has none -> not effective
    #   P = 1, R = (2/3 + 1/2)/2 = 7/12
    #   F2 = 5·1·(7/12) / (4·1 + 7/12) = (35/12)/(55/12) = 7/11
    assert chrf("ab", "abc") == pytest.approx(100 * 7 / 11)
    # swapping roles swaps P and R: P=7/12, R=1 -> F2 = 5·(7/12) / (4·7/12 + 1) = 35/40 = 7/8
    assert chrf("abc", "ab") == pytest.approx(100 * 7 / 8)


def test_chrf_repeated_ngrams_use_clipped_counts() -> None:
    # hyp "aaa", ref "aa":
    #   n=1: a×3 vs a×2 -> match min(3,2)=2 -> P=2/3, R=1
    #   n=2: aa×2 vs aa×1 -> match 1 -> P=1/2, R=1
    #   n=3: ref has none -> not effective
    #   P = (2/3 + 1/2)/2 = 7/12, R = 1 -> F2 = 5·(7/12)/(4·7/12 + 1) = (35/12)/(40/12) = 7/8
    assert chrf("aaa", "aa") == pytest.approx(87.5)


def test_chrf_whitespace_handling() -> None:
    # default (sacreBLEU): whitespace removed, so "a b" vs "ab" is identical
    assert chrf("a b", "ab") == 100.0
    # whitespace=True: hyp "a b" vs ref "ab":
    #   n=1: {a,' ',b} vs {a,b}: match 2 -> P=2/3, R=1
    #   n=2: {"a ", " b"} vs {ab}: match 0 -> P=0, R=0
    #   n=3: ref has none -> not effective
    #   P = 1/3, R = 1/2 -> F2 = 5·(1/6) / (4/3 + 1/2) = (5/6)/(11/6) = 5/11
    assert chrf("a b", "ab", whitespace=True) == pytest.approx(100 * 5 / 11)


def test_chrf_beta_and_order_parameters() -> None:
    # "ab" vs "abc" with beta=1, char_order=1: P=1, R=2/3 -> F1 = 2·(2/3)/(5/3) = 4/5
    assert chrf("ab", "abc", beta=1.0, char_order=1) == pytest.approx(80.0)
    with pytest.raises(ValueError):
        chrf("a", "a", char_order=0)
    with pytest.raises(ValueError):
        chrf("a", "a", beta=0)


def test_chrf_empty_strings() -> None:
    assert chrf("", "") == 100.0  # identical (sacreBLEU would say 0)
    assert chrf("  \n", "\t") == 100.0  # both empty once whitespace is removed
    assert chrf("", "abc") == 0.0
    assert chrf("abc", "") == 0.0
    assert chrf("xyz", "abc") == 0.0


# ---------------------------------------------------------------------------------------------
# delta-chrF (Zed: chrF over n-gram deltas, beta 0.5, whitespace collapsed)


def test_delta_chrf_prediction_equals_settled() -> None:
    # identical deltas in every order: P = R = 1
    assert delta_chrf("ab", "abc", "abc") == 100.0
    assert delta_chrf("def f():\n    pass\n", "def f():\n    return 1\n", "def f():\n    return 1\n") == 100.0
    assert delta_chrf("same", "same", "same") == 100.0


def test_delta_chrf_prediction_equals_original_short_edit() -> None:
    # original "ab" -> settled "abc": expected deltas n=1 {+c}, n=2 {+bc}, n=3 {+abc}, n=4..6 {}.
    # prediction == original: actual deltas empty.
    #   n=1..3: TP=0, TP+FP=0 -> P=0, TP+FN>0 -> R=0
    #   n=4..6: both empty -> P=R=1 (Zed's rule)
    #   P = R = 3/6 -> F = 1/2
    assert delta_chrf("ab", "ab", "abc") == pytest.approx(50.0)
    # effective_orders (not Zed) skips orders 4..6: P = R = 0
    assert delta_chrf("ab", "ab", "abc", effective_orders=True) == 0.0


def test_delta_chrf_prediction_equals_original_long_edit() -> None:
    # the user's edit adds n-grams of every order 1..6, so doing nothing scores 0 under Zed's rule too
    assert delta_chrf("x = 1\n", "x = 1\n", "x = 1\ny = 2\n") == 0.0


def test_delta_chrf_partial_progress() -> None:
    # original "", settled "abcd", prediction "ab" (half of the insertion):
    #   expected: n=1 {a,b,c,d}, n=2 {ab,bc,cd}, n=3 {abc,bcd}, n=4 {abcd}, n=5,6 {}
    #   actual:   n=1 {a,b},     n=2 {ab},       n>=3 {}
    #   n=1: TP=2 FP=0 FN=2 -> P=1, R=1/2
    #   n=2: TP=1 FP=0 FN=2 -> P=1, R=1/3
    #   n=3: TP=0 FP=0 FN=2 -> P=0, R=0
    #   n=4: TP=0 FP=0 FN=1 -> P=0, R=0
    #   n=5,6: both empty   -> P=R=1
    #   P = 4/6 = 2/3; R = (1/2 + 1/3 + 2)/6 = 17/36
    #   F0.5 = 1.25·(2/3)(17/36) / (0.25·(2/3) + 17/36) = (85/216) / (23/36) = 85/138
    assert delta_chrf("", "ab", "abcd") == pytest.approx(100 * 85 / 138)
    # more progress scores higher, all of it scores 100
    assert delta_chrf("", "a", "abcd") < delta_chrf("", "ab", "abcd") < delta_chrf("", "abc", "abcd") < 100.0


def test_delta_chrf_wrong_deletion_counts_deleted_ngrams() -> None:
    # original "abc"; the user deleted "c" (settled "ab"); the prediction deleted "a" ("bc").
    #   expected: n=1 {¬c}, n=2 {¬bc}, n=3 {¬abc}
    #   actual:   n=1 {¬a}, n=2 {¬ab}, n=3 {¬abc}
    #   n=1, n=2: TP=0 -> P=R=0; n=3: TP=1 -> P=R=1; n=4..6 both empty -> 1
    #   P = R = 4/6 -> F = 2/3
    assert delta_chrf("abc", "bc", "ab") == pytest.approx(100 * 2 / 3)


def test_delta_chrf_prediction_that_undoes_user_insertion() -> None:
    # the user will go on to add " + 1"; a prediction that instead deletes "+ 2" moves the other way:
    # every n-gram it adds or removes is a false positive and the user's are all missed
    assert delta_chrf("x = 1 + 2", "x = 1", "x = 1 + 2 + 1") == 0.0


def test_delta_chrf_whitespace_is_collapsed() -> None:
    assert _collapse_whitespace("a  \t b\n\n\nc \n d") == "a b\nc \n d"
    # settled differs from original only in the width of a space run: no edit at all -> 100
    assert delta_chrf("a b", "a b", "a   b") == 100.0
    # the prediction reindents 4 -> 8 spaces and the user did not: still the same after collapsing
    assert delta_chrf("if x:\n    y\n", "if x:\n        y\n", "if x:\n    y\n") == 100.0


# ---------------------------------------------------------------------------------------------
# Reversal ratio (Zed)

# Zed's own table (crates/edit_prediction_metrics/src/reversal.rs, test_reversal_overlap):
# (before the user's edit, at the request, prediction, reversing chars, total changed chars).
ZED_REVERSAL_CASES = [
    ("a\nb\nc", "a\nnew line\nb\nc", "a\nb\nc", 9, 9),
    ("a\ndeleted\nb", "a\nb", "a\ndeleted\nb", 8, 8),
    ("hello beautiful world", "hello world", "hello beautiful world", 10, 10),
    ("foo", "", "bar", 0, 3),
    ("line1\nline2\nline3", "LINE1\nline2\nline3", "LINE1\nline2\nLINE3", 0, 10),
    ("same", "same", "different", 0, 13),
    ("keep\ndelete_me\nkeep2", "keep\nadded\nkeep2", "keep\ndelete_me\nkeep2", 14, 14),
    ("the quick brown fox", "the slow brown fox", "the fast brown fox", 4, 8),
    ("", "epr", "eprintln!()", 0, 8),
    ("", "my_function()", "test_my_function()", 0, 5),
    ("", "test_my_function", "a_test_for_my_special_function_plz", 0, 18),
    ("", "a_b_c", "_a__b__c__", 0, 5),
    ("", "abc", "xyz", 3, 6),
    ("", "abc", "cba", 3, 6),
    ("", "abcd", "axbx", 4, 8),
    ("", "vec.pu", "vec.push(item)", 0, 8),
    ("", "use std::col", "use std::collections::HashMap", 0, 17),
    ("", "name: St", "name: String", 0, 4),
    ("", "hello", "world", 5, 10),
    ("", "mistake", "", 7, 7),
    ("", "<dv", "<div>", 0, 2),
    ("from my_project import Foo\n", "ifrom my_project import Foo\n", "import\nfrom my_project import Foo\n", 0, 6),
    ("from", "ifrom", "from", 1, 1),
    ('print("Hello, World!")', 'sys.("Hello, World!")', 'sys.stdout.write("Hello, World!\\n")', 0, 14),
]


@pytest.mark.parametrize(("before", "current", "predicted", "reversing", "total"), ZED_REVERSAL_CASES)
def test_reversal_counts_match_zeds_table(before: str, current: str, predicted: str, reversing: int, total: int) -> None:
    assert _reversal_counts(before, current, predicted) == (reversing, total)


def test_reversal_prediction_undoes_user_insertion() -> None:
    # the user just typed a line; the prediction deletes exactly it: 9 of 9 changed chars reverse it
    before, original = "a\nb\nc", "a\nnew line\nb\nc"
    assert reversal_ratio(original, before, "a\nnew line\nb\nc\nd", before=before) == 1.0
    # the user just typed "i"; the prediction removes it
    assert reversal_ratio("ifrom", "from", "from", before="from") == 1.0


def test_reversal_prediction_restores_user_deletion() -> None:
    # the user deleted "beautiful "; the prediction types it back: 10 / 10
    before = "hello beautiful world"
    assert reversal_ratio("hello world", before, "hello world", before=before) == 1.0


def test_reversal_partial() -> None:
    # the user replaced "quick" with "slow"; the prediction replaces "slow" with "fast":
    #   it deletes the 4 chars the user inserted (reversing) and inserts "fast" (LCS("quick","fast")=0)
    #   total = 4 deleted + 4 inserted = 8 -> 4/8
    before, original = "the quick brown fox", "the slow brown fox"
    assert reversal_ratio(original, "the fast brown fox", original, before=before) == 0.5
    # the user typed "abcd"; the prediction rewrites the word as "axbx" (neither is a subsequence of
    # the other, so it stays one replacement): deletes 4 user-inserted chars + inserts 4 -> 4/8
    assert reversal_ratio("abcd", "axbx", "abcd", before="") == 0.5


def test_reversal_zero_cases() -> None:
    # prediction == settled == progress on the user's edit: completing a name is not a reversal
    assert reversal_ratio("epr", "eprintln!()", "eprintln!()", before="") == 0.0
    # prediction == original: no change, nothing reversed (0 / 0 -> 0)
    assert reversal_ratio("ifrom", "ifrom", "from", before="from") == 0.0
    # no known user edit
    assert reversal_ratio("ifrom", "from", "from") == 0.0
    assert reversal_ratio("ifrom", "from", "from", before="ifrom") == 0.0
    # an edit elsewhere in the region
    before, original, prediction = "line1\nline2\nline3", "LINE1\nline2\nline3", "LINE1\nline2\nLINE3"
    assert reversal_ratio(original, prediction, prediction, before=before) == 0.0


def test_text_before_last_edit() -> None:
    hist = [
        EditStep("a.py", "x = 1\n", "x = 2\n"),
        EditStep("b.py", "zzz", "yyy"),  # another file
        EditStep("a.py", "def f(", "def fo("),  # the latest edit of a.py
    ]
    assert text_before_last_edit("def fo(\n    pass\n", hist, "a.py") == "def f(\n    pass\n"
    assert text_before_last_edit("yyy yy", hist, "b.py") == "zzz yy"
    assert text_before_last_edit("nothing here", hist, "a.py") is None  # edit outside the region
    assert text_before_last_edit("def fo( def fo(", hist, "a.py") is None  # ambiguous
    assert text_before_last_edit("x", hist, "c.py") is None  # no history for the path
    assert text_before_last_edit("x", [EditStep("a.py", "x", "")], "a.py") is None  # pure deletion
    assert text_before_last_edit("x", [EditStep("a.py", "x", "x")], "a.py") is None  # no-op


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


# ---------------------------------------------------------------------------------------------
# Exact match


def test_exact_match() -> None:
    assert exact_match("a\n  b\n", "a\n  b\n")
    assert not exact_match("a\n  b \n", "a\n  b\n")
    assert exact_match("a\r\n  b \t\n\n", "a\n  b", normalized=True)
    assert not exact_match("a\n b\n", "a\n  b\n", normalized=True)  # indentation is kept
    assert not exact_match("a\n\nb", "a\nb", normalized=True)  # interior blank lines are kept
    assert normalize_for_match("x  \r\ny\r\n\r\n") == "x\ny"


# ---------------------------------------------------------------------------------------------
# Summary and gate


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
    )
    empty = summarize([])
    assert empty.count == 0 and empty.delta_chrf == 0.0 and empty.parse_rate == 0.0
    # round-trips as JSON
    assert msgspec.json.decode(msgspec.json.encode(s), type=EvalSummary) == s


BASE = EvalSummary(
    count=200,
    parsed=198,
    parse_rate=0.99,
    delta_chrf=40.0,
    reversal_ratio=0.05,
    exact_match_rate=0.30,
    exact_match_normalized_rate=0.32,
    reversal_rows=120,
)


def _with(**kw: float) -> EvalSummary:
    return msgspec.structs.replace(BASE, **kw)


def test_compare_passes_when_not_worse() -> None:
    ok, reason = compare(BASE, BASE)
    assert ok and reason.startswith("not worse") and "delta-chrF 40.00 vs 40.00" in reason
    # better everywhere
    assert compare(_with(delta_chrf=45.0, reversal_ratio=0.01, exact_match_rate=0.4), BASE)[0]
    # slightly worse but within every tolerance (defaults: 1.0 point, 1%, 0.01, 2%)
    assert compare(
        _with(delta_chrf=39.0, parse_rate=0.98, reversal_ratio=0.06, exact_match_rate=0.28),
        BASE,
    )[0]


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"delta_chrf": 38.9}, "delta-chrF"),
        ({"parse_rate": 0.97}, "parse rate"),
        ({"reversal_ratio": 0.07}, "reversal ratio"),
        ({"exact_match_rate": 0.27}, "exact match"),
    ],
)
def test_compare_fails_each_check(change: dict[str, float], name: str) -> None:
    ok, reason = compare(_with(**change), BASE)
    assert not ok
    assert reason.startswith("worse than current") and name in reason
    assert reason.count(";") == 0  # only the failing check is named


def test_compare_reports_all_failures_and_custom_tolerance() -> None:
    ok, reason = compare(_with(delta_chrf=30.0, reversal_ratio=0.5), BASE)
    assert not ok and "delta-chrF" in reason and "reversal ratio" in reason
    # a looser tolerance lets the same drop through
    assert compare(_with(delta_chrf=30.0), BASE, tolerance=GateTolerance(delta_chrf=10.0))[0]
    # zero tolerance: any drop fails, equality passes
    strict = GateTolerance(delta_chrf=0, parse_rate=0, reversal_ratio=0, exact_match_rate=0)
    assert compare(BASE, BASE, tolerance=strict)[0]
    assert not compare(_with(delta_chrf=39.99), BASE, tolerance=strict)[0]
    assert DEFAULT_TOLERANCE == GateTolerance()


def test_compare_refuses_incomparable_sets() -> None:
    ok, reason = compare(_with(count=199), BASE)
    assert not ok and "different held-out sets" in reason
    empty = summarize([])
    ok, reason = compare(empty, empty)
    assert not ok and "empty" in reason


# ---------------------------------------------------------------------------------------------
# Properties

# a small alphabet so that n-grams collide often
texts = st.text(alphabet="ab_( \n", max_size=14)


def _naive_delta_chrf(original: str, prediction: str, settled: str, beta: float = 0.5, order: int = 6) -> float:
    """Zed's reference formulation: full-text n-gram deltas with "¬"-prefixed removals."""
    if original == settled == prediction:
        return 100.0
    o, p, s = (_collapse_whitespace(t) for t in (original, prediction, settled))

    def grams(t: str, n: int) -> Counter[str]:
        return Counter(t[i : i + n] for i in range(len(t) - n + 1))

    def delta(after: str, n: int) -> Counter[str]:
        out: Counter[str] = Counter()
        d = grams(after, n)
        d.subtract(grams(o, n))
        for g, c in d.items():
            if c:
                out[g if c > 0 else "¬" + g] = abs(c)
        return out

    sp = sr = 0.0
    for n in range(1, order + 1):
        e, a = delta(s, n), delta(p, n)
        if not e and not a:
            sp, sr = sp + 1, sr + 1
            continue
        tp = sum((e & a).values())
        sp += tp / sum(a.values()) if a else 0.0
        sr += tp / sum(e.values()) if e else 0.0
    P, R = sp / order, sr / order
    return 0.0 if P + R == 0 else (1 + beta**2) * P * R / (beta**2 * P + R) * 100


@settings(max_examples=150, deadline=None)
@given(texts, texts)
def test_chrf_properties(x: str, y: str) -> None:
    assert chrf(x, x) == 100.0
    assert 0.0 <= chrf(x, y) <= 100.0
    assert 0.0 <= chrf(x, y, whitespace=True, beta=1.0) <= 100.0 + 1e-9


@settings(max_examples=200, deadline=None)
@given(texts, texts, texts)
def test_delta_chrf_properties(o: str, p: str, s: str) -> None:
    d = delta_chrf(o, p, s)
    assert 0.0 <= d <= 100.0 + 1e-9
    assert d == pytest.approx(_naive_delta_chrf(o, p, s))  # windowing is only a speed-up
    assert delta_chrf(o, s, s) == pytest.approx(100.0)
    if _collapse_whitespace(o) != _collapse_whitespace(s):
        assert delta_chrf(o, o, s, effective_orders=True) == 0.0


@settings(max_examples=200, deadline=None)
@given(texts, texts, texts)
def test_reversal_ratio_properties(before: str, original: str, prediction: str) -> None:
    r = reversal_ratio(original, prediction, None, before=before)
    assert 0.0 <= r <= 1.0
    assert reversal_ratio(original, original, None, before=before) == 0.0
    reversing, total = _reversal_counts(before, original, prediction)
    assert 0 <= reversing <= total
    assert (total == 0) == (original == prediction)
