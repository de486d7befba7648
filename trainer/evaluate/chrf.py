"""chrF and delta-chrF: how close a predicted edit is to the user's, in chrF points (0..100).

Its own module because it is the one metric the publish gate weighs most, and its definition is
borrowed: the F-beta core is sacreBLEU's ``CHRF`` (``word_order=0``, ``eps_smoothing=False``),
so "chrF" means what the MT literature means (Popović 2015, "chrF: character n-gram F-score for
automatic MT evaluation"; https://github.com/mjpost/sacrebleu ``sacrebleu/metrics/chrf.py``).

delta-chrF follows Zed's edit-prediction evaluation (https://github.com/zed-industries/zed,
``crates/edit_prediction_metrics/src/patch_metrics.rs``, ``delta_chr_f``; older copies in
``crates/edit_prediction_cli/src/metrics.rs`` used beta=2 and dropped whitespace, the current crate
uses beta=0.5 and collapses whitespace, which we follow). It scores the n-gram *deltas*
``original -> settled`` and ``original -> prediction``, which sacreBLEU cannot n-gram itself; we
count them and hand the per-order (hypothesis, reference, match) counts to sacreBLEU's F-score.

Pure and exact: no randomness, integer counts, the same float operations in the same order as the
hand-written implementation this replaced (checked equal on the unit tests' cases).
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

from sacrebleu.metrics.chrf import CHRF

__all__ = ["chrf", "collapse_whitespace", "delta_chrf"]


@lru_cache(maxsize=32)
def _chrf_metric(char_order: int, beta: float, whitespace: bool = False) -> CHRF:
    return CHRF(char_order=char_order, word_order=0, beta=beta, whitespace=whitespace, eps_smoothing=False)


def _check(char_order: int, beta: float) -> None:
    if char_order < 1:
        raise ValueError("char_order must be >= 1")
    if beta <= 0:
        raise ValueError("beta must be > 0")


def chrf(
    hypothesis: str,
    reference: str,
    *,
    char_order: int = 6,
    beta: float = 2.0,
    whitespace: bool = False,
) -> float:
    """Sentence-level chrF (character n-gram F-beta score), in [0, 100]: sacreBLEU's ``CHRF``.

    Definition (sacreBLEU 2.x ``CHRF`` with ``word_order=0``, ``eps_smoothing=False``):

    1. Unless ``whitespace`` is true, all whitespace is removed from both strings
       (sacreBLEU: ``''.join(s.split())``).
    2. For every order ``n`` in ``1..char_order`` take the multisets of character n-grams of
       hypothesis ``H_n`` and reference ``R_n``; ``match_n = |H_n ∩ R_n|`` (multiset
       intersection: per n-gram the minimum of the two counts).
    3. An order is *effective* when both ``|H_n| > 0`` and ``|R_n| > 0``. Over the effective
       orders take the arithmetic means ``P = mean(match_n / |H_n|)`` and
       ``R = mean(match_n / |R_n|)`` (no effective order: ``P = R = 0``).
    4. ``chrF = 100 * (1 + beta²)·P·R / (beta²·P + R)``, or 0 when ``P + R = 0``.

    Empty strings (after step 1): both empty -> 100.0 (identical texts); exactly one empty ->
    0.0. sacreBLEU returns 0.0 for both-empty; we deviate so that ``chrf(x, x) == 100`` for
    every ``x``.
    """
    _check(char_order, beta)
    if not whitespace and not "".join(hypothesis.split()) and not "".join(reference.split()):
        return 100.0
    if whitespace and not hypothesis and not reference:
        return 100.0
    return float(_chrf_metric(char_order, beta, whitespace).sentence_score(hypothesis, [reference]).score)


def collapse_whitespace(text: str) -> str:
    """Zed's ``ChrfWhitespace::Collapse``: runs of non-newline whitespace become one space and
    runs of ``\\n`` one ``\\n``; the two kinds are collapsed separately, so ``" \\n "`` stays
    ``" \\n "``."""
    out: list[str] = []
    last: str | None = None
    for c in text:
        if c == "\n":
            if last != "\n":
                out.append("\n")
                last = "\n"
        elif c.isspace():
            if last != " ":
                out.append(" ")
                last = " "
        else:
            out.append(c)
            last = None
    return "".join(out)


def _char_ngrams(text: str, n: int) -> Counter[str]:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def _changed_windows(old: str, new: str, context: int) -> tuple[str, str]:
    """Trim the common prefix/suffix of ``old``/``new``, keeping ``context`` characters of each
    on both sides. For every n-gram order ``<= context + 1`` the n-gram count *difference*
    between the two windows equals the difference between the full texts (n-grams lying wholly
    in the shared prefix or suffix cancel), so this is only a speed-up."""
    limit = min(len(old), len(new))
    p = 0
    while p < limit and old[p] == new[p]:
        p += 1
    s = 0
    while s < limit - p and old[-1 - s] == new[-1 - s]:
        s += 1
    if p == len(old) and p == len(new):
        return "", ""
    lo = max(0, p - context)
    return old[lo : min(len(old), len(old) - s + context)], new[lo : min(len(new), len(new) - s + context)]


def _delta_bag(before: str, after: str, n: int) -> Counter[tuple[bool, str]]:
    """The n-gram edit ``before -> after`` as a multiset of signed n-grams: ``(True, g)`` for
    each added occurrence of ``g``, ``(False, g)`` for each removed one (Zed writes the latter
    as ``"¬g"``)."""
    diff = _char_ngrams(after, n)
    diff.subtract(_char_ngrams(before, n))
    bag: Counter[tuple[bool, str]] = Counter()
    for gram, d in diff.items():
        if d > 0:
            bag[(True, gram)] = d
        elif d < 0:
            bag[(False, gram)] = -d
    return bag


def delta_chrf(
    original: str,
    prediction: str,
    settled: str,
    *,
    char_order: int = 6,
    beta: float = 0.5,
    effective_orders: bool = False,
) -> float:
    """How well the prediction's *edit* matches the user's edit, in [0, 100].

    Following Zed's edit-prediction eval (``delta_chr_f(original, expected, actual)`` in
    ``crates/edit_prediction_metrics/src/patch_metrics.rs``, with expected = ``settled`` and
    actual = ``prediction``). chrF is computed on the n-gram *deltas*, not the texts:

    1. If ``original == settled == prediction`` the score is 100.
    2. Each text is whitespace-collapsed (see ``collapse_whitespace``).
    3. For each order ``n`` in ``1..char_order``: ``E_n`` = signed n-gram delta
       ``original -> settled``, ``A_n`` = signed delta ``original -> prediction``; a removed
       n-gram ``g`` is a distinct token ``¬g``, so failing to delete ``g`` is a false negative and
       deleting the wrong thing a false positive. With multiset counts ``TP = |E_n ∩ A_n|``,
       ``FP = |A_n| - TP``, ``FN = |E_n| - TP``: ``P_n = TP/(TP+FP)`` (0 if ``TP+FP == 0``),
       ``R_n = TP/(TP+FN)`` (0 if ``TP+FN == 0``). If both deltas are empty, ``P_n = R_n = 1``.
    4. ``P``, ``R`` = means of ``P_n``, ``R_n`` over all ``char_order`` orders;
       score = ``100 * F_beta(P, R)`` with Zed's current ``beta = 0.5`` (precision-weighted:
       a wrong edit costs more than a missing one).

    Step 4 is sacreBLEU's ``CHRF._compute_f_score`` fed per order with ``(|A_n|, |E_n|, TP)``.
    sacreBLEU skips an order where either count is 0; Zed counts it (as 0, or as 1 when both
    deltas are empty), so such an order is fed as ``(max(|A_n|, 1), max(|E_n|, 1), TP)`` (TP is
    0 there) or ``(1, 1, 1)``, which gives exactly Zed's ``P_n`` and ``R_n``.

    Consequences (Zed's definition, kept as is): ``prediction == settled`` scores 100;
    ``prediction == original`` scores 0 only when the user's edit has n-grams of every order — for
    an edit shorter than ``char_order`` the orders where both deltas are empty count as perfect
    (e.g. original ``"ab"``, settled ``"abc"``, prediction ``"ab"`` scores 50).
    ``effective_orders=True`` (not Zed) averages only over orders where at least one delta is
    non-empty (100 if none is), which makes ``prediction == original`` score exactly 0 whenever
    the settled text differs from the original beyond whitespace.
    """
    _check(char_order, beta)
    if original == settled == prediction:
        return 100.0
    orig = collapse_whitespace(original)
    exp_old, exp_new = _changed_windows(orig, collapse_whitespace(settled), char_order - 1)
    act_old, act_new = _changed_windows(orig, collapse_whitespace(prediction), char_order - 1)

    stats: list[int] = []  # sacreBLEU's flat [hyp, ref, match] per order
    for n in range(1, char_order + 1):
        expected = _delta_bag(exp_old, exp_new, n)
        actual = _delta_bag(act_old, act_new, n)
        if not expected and not actual:
            if not effective_orders:
                stats += [1, 1, 1]
            continue
        tp = sum((expected & actual).values())
        stats += [max(1, actual.total()), max(1, expected.total()), tp]
    if not stats:  # effective_orders and nothing changed anywhere (beyond whitespace)
        return 100.0
    return float(_chrf_metric(len(stats) // 3, beta)._compute_f_score(stats))
