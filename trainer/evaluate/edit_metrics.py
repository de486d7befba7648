"""Held-out evaluation metrics for edit-prediction students, and the publishing gate.

A *prediction* is a new text for the editable region. Each held-out row has the region as it was
when the prediction was requested (``original``), what the user ended up with (``settled``), the
model's output (``prediction``; ``None`` when the output did not parse into a region) and, when the
example's edit history lets us reconstruct it, the region as it was *before the user's most recent
edit* (``before``).

Sources the definitions follow (our own implementation; no code copied):

* chrF: sacreBLEU 2.x ``sacrebleu/metrics/chrf.py`` (``CHRF._compute_f_score`` with
  ``eps_smoothing=False``; ``helpers.extract_all_char_ngrams``), https://github.com/mjpost/sacrebleu,
  after Popović (2015) "chrF: character n-gram F-score for automatic MT evaluation".
* delta-chrF and reversal ratio: Zed's edit-prediction evaluation,
  https://github.com/zed-industries/zed, ``crates/edit_prediction_metrics/src/patch_metrics.rs``
  (``delta_chr_f``), ``src/reversal.rs`` (``compute_reversal_overlap``,
  ``compute_prediction_reversal_ratio_from_history``), ``src/tokenize.rs``,
  ``src/prediction_score.rs`` (an unparsable patch scores as the unchanged text) and
  ``src/summary.rs`` (plain means over examples). Older copies live in
  ``crates/edit_prediction_cli/src/{metrics,reversal_tracking}.rs`` (those used beta=2 and
  dropped whitespace; the current crate uses beta=0.5 and collapses whitespace, which we follow).

Everything here is pure Python (plus rapidfuzz for LCS lengths), deterministic and exact: no
randomness, no hash-order dependence (all aggregation is over integer counts).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from difflib import SequenceMatcher

from msgspec import Struct
from rapidfuzz.distance import Indel, LCSseq

from settle.schemas.events import EditStep
from settle.schemas.examples import SettledExample

__all__ = [
    "chrf",
    "delta_chrf",
    "reversal_ratio",
    "exact_match",
    "normalize_for_match",
    "text_before_last_edit",
    "EvalRow",
    "row_from_example",
    "RowScore",
    "score_row",
    "EvalSummary",
    "summarize",
    "GateTolerance",
    "DEFAULT_TOLERANCE",
    "compare",
]


# --------------------------------------------------------------------------------------------
# chrF (sacreBLEU style, character n-grams only)


def _char_ngrams(text: str, n: int) -> Counter[str]:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf(
    hypothesis: str,
    reference: str,
    *,
    char_order: int = 6,
    beta: float = 2.0,
    whitespace: bool = False,
) -> float:
    """Sentence-level chrF (character n-gram F-beta score), in [0, 100].

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
    if char_order < 1:
        raise ValueError("char_order must be >= 1")
    if beta <= 0:
        raise ValueError("beta must be > 0")
    if not whitespace:
        hypothesis = "".join(hypothesis.split())
        reference = "".join(reference.split())
    if not hypothesis or not reference:
        return 100.0 if hypothesis == reference else 0.0

    sum_p = sum_r = 0.0
    effective = 0
    for n in range(1, char_order + 1):
        hyp = _char_ngrams(hypothesis, n)
        ref = _char_ngrams(reference, n)
        n_hyp = len(hypothesis) - n + 1
        n_ref = len(reference) - n + 1
        if n_hyp <= 0 or n_ref <= 0:
            continue
        match = sum((hyp & ref).values())
        sum_p += match / n_hyp
        sum_r += match / n_ref
        effective += 1
    if effective == 0:  # unreachable for non-empty strings (order 1 is always effective)
        return 0.0
    return _f_beta(sum_p / effective, sum_r / effective, beta) * 100.0


def _f_beta(precision: float, recall: float, beta: float) -> float:
    if precision + recall == 0.0:
        return 0.0
    b2 = beta * beta
    return (1.0 + b2) * precision * recall / (b2 * precision + recall)


# --------------------------------------------------------------------------------------------
# delta-chrF (Zed)


def _collapse_whitespace(text: str) -> str:
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
    2. Each text is whitespace-collapsed (see ``_collapse_whitespace``).
    3. For each order ``n`` in ``1..char_order``: ``E_n`` = signed n-gram delta
       ``original -> settled``, ``A_n`` = signed delta ``original -> prediction``; a removed
       n-gram ``g`` is a distinct token ``¬g``, so failing to delete ``g`` is a false negative and
       deleting the wrong thing a false positive. With multiset counts ``TP = |E_n ∩ A_n|``,
       ``FP = |A_n| - TP``, ``FN = |E_n| - TP``: ``P_n = TP/(TP+FP)`` (0 if ``TP+FP == 0``),
       ``R_n = TP/(TP+FN)`` (0 if ``TP+FN == 0``). If both deltas are empty, ``P_n = R_n = 1``.
    4. ``P``, ``R`` = means of ``P_n``, ``R_n`` over all ``char_order`` orders;
       score = ``100 * F_beta(P, R)`` with Zed's current ``beta = 0.5`` (precision-weighted:
       a wrong edit costs more than a missing one).

    Consequences (Zed's definition, kept as is): ``prediction == settled`` scores 100;
    ``prediction == original`` scores 0 only when the user's edit has n-grams of every order — for
    an edit shorter than ``char_order`` the orders where both deltas are empty count as perfect
    (e.g. original ``"ab"``, settled ``"abc"``, prediction ``"ab"`` scores 50).
    ``effective_orders=True`` (not Zed) averages only over orders where at least one delta is
    non-empty (100 if none is), which makes ``prediction == original`` score exactly 0 whenever
    the settled text differs from the original beyond whitespace.
    """
    if char_order < 1:
        raise ValueError("char_order must be >= 1")
    if beta <= 0:
        raise ValueError("beta must be > 0")
    if original == settled == prediction:
        return 100.0
    orig = _collapse_whitespace(original)
    exp_old, exp_new = _changed_windows(orig, _collapse_whitespace(settled), char_order - 1)
    act_old, act_new = _changed_windows(orig, _collapse_whitespace(prediction), char_order - 1)

    sum_p = sum_r = 0.0
    orders = 0
    for n in range(1, char_order + 1):
        expected = _delta_bag(exp_old, exp_new, n)
        actual = _delta_bag(act_old, act_new, n)
        if not expected and not actual:
            if not effective_orders:
                sum_p += 1.0
                sum_r += 1.0
                orders += 1
            continue
        tp = sum((expected & actual).values())
        n_act = sum(actual.values())
        n_exp = sum(expected.values())
        sum_p += tp / n_act if n_act else 0.0
        sum_r += tp / n_exp if n_exp else 0.0
        orders += 1
    if orders == 0:  # effective_orders and nothing changed anywhere (beyond whitespace)
        return 100.0
    return _f_beta(sum_p / orders, sum_r / orders, beta) * 100.0


# --------------------------------------------------------------------------------------------
# Reversal ratio (Zed)

# Code tokens for the in-hunk diff: identifier pieces (split at underscores, which are tokens of
# their own), newline runs, other-whitespace runs, single punctuation characters. A simplified
# form of Zed's ``tokenize.rs`` (which also splits camelCase and groups multi-char operators).
_TOKEN_RE = re.compile(r"[^\W_]+|_+|[\r\n]+|[^\S\r\n]+|.", re.DOTALL)
_MAX_TOKEN_DIFF_CHARS = 512
_MAX_TOKEN_DIFF_LINES = 8

#: an edit of ``old``: replace ``old[start:end]`` with ``text``
_Edit = tuple[int, int, str]


def _opcode_edits(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int, int, int]]:
    sm = SequenceMatcher(None, a, b, autojunk=False)
    return [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in sm.get_opcodes() if tag != "equal"]


def _offsets(pieces: Sequence[str], base: int = 0) -> list[int]:
    out = [base]
    for p in pieces:
        out.append(out[-1] + len(p))
    return out


def _granular_edits(old: str, new: str) -> list[_Edit]:
    """Diff ``old -> new`` the way Zed's reversal tracker does: a line diff, refined into a
    token diff inside every hunk whose two sides are both non-empty and small (<= 512 chars and
    <= 8 lines each); then Zed's ``normalize_extension_edits``: a replacement whose old text is a
    subsequence of its new text becomes pure character insertions (``"epr" -> "eprintln!()"`` is
    the insertion ``"intln!()"``), and one whose new text is a subsequence of its old text pure
    character deletions (``"ifrom" -> "from"`` deletes ``"i"``). Offsets are code points of
    ``old``; edits are sorted and disjoint."""
    old_lines = old.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    old_off = _offsets(old_lines)
    new_off = _offsets(new_lines)
    raw: list[_Edit] = []
    for i1, i2, j1, j2 in _opcode_edits(old_lines, new_lines):
        os_, oe, ns, ne = old_off[i1], old_off[i2], new_off[j1], new_off[j2]
        if (
            i1 < i2
            and j1 < j2
            and oe - os_ <= _MAX_TOKEN_DIFF_CHARS
            and ne - ns <= _MAX_TOKEN_DIFF_CHARS
            and i2 - i1 <= _MAX_TOKEN_DIFF_LINES
            and j2 - j1 <= _MAX_TOKEN_DIFF_LINES
        ):
            a = _TOKEN_RE.findall(old[os_:oe])
            b = _TOKEN_RE.findall(new[ns:ne])
            a_off = _offsets(a, os_)
            b_off = _offsets(b, ns)
            for k1, k2, l1, l2 in _opcode_edits(a, b):
                raw.append((a_off[k1], a_off[k2], new[b_off[l1] : b_off[l2]]))
        else:
            raw.append((os_, oe, new[ns:ne]))

    edits: list[_Edit] = []
    for start, end, text in raw:
        removed = old[start:end]
        if removed and text:
            common = LCSseq.similarity(removed, text)
            if common == len(removed) or common == len(text):
                for op in Indel.opcodes(removed, text):
                    if op.tag != "equal":
                        edits.append(
                            (start + op.src_start, start + op.src_end, text[op.dest_start : op.dest_end])
                        )
                continue
        edits.append((start, end, text))
    return edits


def _reversal_counts(before: str, current: str, predicted: str) -> tuple[int, int]:
    """``(chars of the prediction's edit that reverse the user's edit, chars the prediction
    changes)`` following Zed's ``compute_reversal_overlap``."""
    history = _granular_edits(before, current)
    prediction = _granular_edits(current, predicted)

    # Where the user's edit put text (ranges in `current`) and what it deleted (with the position
    # in `current` where the deleted text used to be).
    added: list[tuple[int, int]] = []
    deleted: list[tuple[str, int]] = []
    shift = 0
    for start, end, text in history:
        pos = start + shift
        if text:
            added.append((pos, pos + len(text)))
        if end > start:
            deleted.append((before[start:end], pos))
        shift += len(text) - (end - start)

    reversing = 0
    total = 0
    for start, end, text in prediction:
        total += (end - start) + len(text)
        # removes characters the user just inserted
        for a0, a1 in added:
            reversing += max(0, min(end, a1) - max(start, a0))
        # re-inserts (a subsequence of) text the user just deleted at that spot
        if text:
            restored = sum(
                LCSseq.similarity(gone, text) for gone, pos in deleted if start <= pos < end or pos == start
            )
            # Capped at the inserted length (not in Zed), so the ratio cannot exceed 1 when several
            # deletions sit inside one predicted replacement.
            reversing += min(restored, len(text))
    return reversing, total


def reversal_ratio(
    original: str,
    prediction: str,
    settled: str | None = None,
    *,
    before: str | None = None,
) -> float:
    """Share of the prediction's edit that undoes the user's most recent edit, in [0, 1].

    Following Zed's edit-prediction eval (``compute_prediction_reversal_ratio_from_history`` /
    ``compute_reversal_overlap`` in ``crates/edit_prediction_metrics/src/reversal.rs``). The user's
    "just did" edit is ``before -> original``: ``before`` is the region as it was before the user's
    latest edit (Zed reverse-applies the most recent edit-history diff for the cursor's file; see
    ``text_before_last_edit``), ``original`` the region when the prediction was requested. With
    both edits diffed at character granularity (``_granular_edits``)::

        reversing = chars the prediction deletes that lie in text the user just inserted
                  + for each predicted insertion at the spot of a user deletion,
                    LCS(deleted text, inserted text)          (capped at the inserted length)
        total     = chars the prediction deletes + chars it inserts   (original -> prediction)
        ratio     = reversing / total, or 0.0 when the prediction changes nothing

    E.g. the user typed ``"i"`` (``before="from"``, ``original="ifrom"``) and the prediction is
    ``"from"``: 1 / 1 = 1.0; the user changed ``quick`` to ``slow`` and the prediction writes
    ``fast`` over ``slow``: 4 reversed of 8 changed = 0.5.

    ``before=None`` (no user edit could be located) gives 0.0, as Zed does when the history has no
    usable last edit. ``settled`` is accepted for symmetry with ``delta_chrf`` and is not used: the
    definition concerns edits made *before* the request, whatever the user did afterwards.
    """
    del settled
    if before is None or before == original:
        return 0.0
    reversing, total = _reversal_counts(before, original, prediction)
    return reversing / total if total else 0.0


def text_before_last_edit(original: str, history: Sequence[EditStep], path: str) -> str | None:
    """Reconstruct the region as it was before the user's most recent edit to ``path``.

    Takes the last ``EditStep`` for ``path`` (Zed likewise takes the most recent event for the
    cursor's file) and, if its ``new_text`` occurs exactly once in ``original``, replaces that
    occurrence with its ``old_text``. Returns ``None`` when that is impossible or meaningless: no
    step for the path, a no-op step, an empty or truncated ``new_text``, the edit lies outside the
    region, or the match is ambiguous.
    """
    step = next((s for s in reversed(history) if s.path == path), None)
    if step is None or step.old_text == step.new_text or not step.new_text:
        return None
    at = original.find(step.new_text)
    if at < 0 or original.find(step.new_text, at + 1) >= 0:
        return None
    return original[:at] + step.old_text + original[at + len(step.new_text) :]


# --------------------------------------------------------------------------------------------
# Exact match


def normalize_for_match(text: str) -> str:
    """Line endings to ``\\n``, trailing spaces/tabs stripped from every line, trailing blank lines
    dropped. Indentation and interior blank lines are kept (they matter in code)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip(" \t\f\v") for line in text.split("\n")).rstrip("\n")


def exact_match(prediction: str, settled: str, *, normalized: bool = False) -> bool:
    """``prediction == settled`` byte for byte (code points); with ``normalized=True`` compare
    ``normalize_for_match`` of both (ignores CRLF vs LF, trailing whitespace, trailing blank
    lines)."""
    if normalized:
        return normalize_for_match(prediction) == normalize_for_match(settled)
    return prediction == settled


# --------------------------------------------------------------------------------------------
# Rows, summary, gate


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


def score_row(row: EvalRow) -> RowScore:
    text = row.original if row.prediction is None else row.prediction
    return RowScore(
        parsed=row.prediction is not None,
        delta_chrf=delta_chrf(row.original, text, row.settled),
        reversal_ratio=reversal_ratio(row.original, text, row.settled, before=row.before),
        exact_match=exact_match(text, row.settled),
        exact_match_normalized=exact_match(text, row.settled, normalized=True),
        has_before=row.before is not None and row.before != row.original,
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


def summarize(rows: Iterable[EvalRow]) -> EvalSummary:
    """Score every row (``score_row``) and average. Sums run in input order, so the result is
    deterministic for a given row order (and equal up to float rounding for any order)."""
    n = parsed = exact = exact_norm = with_before = 0
    sum_delta = sum_rev = 0.0
    for row in rows:
        s = score_row(row)
        n += 1
        parsed += s.parsed
        exact += s.exact_match
        exact_norm += s.exact_match_normalized
        with_before += s.has_before
        sum_delta += s.delta_chrf
        sum_rev += s.reversal_ratio
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
    )


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
