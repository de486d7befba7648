"""chrF (sacreBLEU's CHRF) and delta-chrF (Zed): hand-worked values and properties.

Expected values are worked out by hand in the comments. Notation: ``G_n(s)`` is the multiset of
character n-grams of ``s``; chrF averages precision/recall over orders and takes F-beta:
``F = (1 + b²)·P·R / (b²·P + R)``.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settle.trainer.evaluate.chrf import chrf, collapse_whitespace, delta_chrf

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
    assert collapse_whitespace("a  \t b\n\n\nc \n d") == "a b\nc \n d"
    # settled differs from original only in the width of a space run: no edit at all -> 100
    assert delta_chrf("a b", "a b", "a   b") == 100.0
    # the prediction reindents 4 -> 8 spaces and the user did not: still the same after collapsing
    assert delta_chrf("if x:\n    y\n", "if x:\n        y\n", "if x:\n    y\n") == 100.0


# ---------------------------------------------------------------------------------------------
# Properties

# a small alphabet so that n-grams collide often
texts = st.text(alphabet="ab_( \n", max_size=14)


def _naive_delta_chrf(original: str, prediction: str, settled: str, beta: float = 0.5, order: int = 6) -> float:
    """Zed's reference formulation: full-text n-gram deltas with "¬"-prefixed removals."""
    if original == settled == prediction:
        return 100.0
    o, p, s = (collapse_whitespace(t) for t in (original, prediction, settled))

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
    if collapse_whitespace(o) != collapse_whitespace(s):
        assert delta_chrf(o, o, s, effective_orders=True) == 0.0
