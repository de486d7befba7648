"""Zed's token-level kept rate and recall rate of an edit prediction.

The definition is Zed's, from ``crates/edit_prediction_metrics/src/kept_rate.rs``
(``compute_kept_rate``) and ``tokenize.rs`` in zed-industries/zed (the
``edit_prediction_cli/src/kept_rate.rs`` it grew out of had the kept rate only).
Given the text before the prediction (``base``), the prediction (``candidate``)
and what the user ended up with (``reference``, the settled text):

1. Split each text into *units*: a run of identifier characters (alphanumeric or
   ``_``), a run of newlines (``\\n``/``\\r``), a run of other whitespace, or one
   punctuation token (the longest of Zed's multi-character operators such as
   ``::``, ``->``, ``..=``, else one character). Zed tokenizes identifiers further
   (camelCase, snake_case), then joins adjacent identifier tokens back into one
   unit before comparing, so counting on units gives the same numbers.
2. Context is what the candidate shares with the base: units of one longest
   common subsequence (LCS) of candidate and base. The rest are the candidate's
   *new* units; base units outside that LCS are the candidate's *deletions*. The
   same for the reference against the base.
3. *Kept*: candidate new units on one LCS of (candidate new units, reference new
   units). *Correctly deleted*: base units deleted by both.
4. Sizes are UTF-8 bytes (Rust's ``str::len``), as in Zed's ``edit_bytes_*`` fields.
   ``kept_rate = (kept + correctly_deleted) / (candidate_new + candidate_deleted)``,
   ``recall_rate = (kept + correctly_deleted) / (reference_new + reference_deleted)``;
   an empty side gives 1.0 if the other side is empty too, else 0.0.
5. Shortcuts as in Zed: all three equal gives 1.0 / 1.0 with everything context;
   when the candidate's and the reference's length changes (in bytes, against the
   base) differ by more than 512, the final text is "dirty" and both rates are 0.

The LCS tie-breaking matters (two LCSs of one length can cover different bytes),
so it follows Zed's DP backtracking exactly: common prefix and suffix first, then
the classic table walked back from the end, preferring "up" for the first
sequence's mask and "left" for the second's. The table is computed bit-parallel
(one Python integer per row, Allison-Dix/Hyyrö), which yields the same table
values as the quadratic loop at a fraction of its cost.

Character classes use Python's ``str`` predicates; Rust's Unicode properties
differ for a few rare code points (e.g. combining marks that Rust calls
alphabetic). Pure: no Kafka, no model runtime.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from settle.schemas.examples import KeptRate, SettledExample

#: Zed's ``MAX_DIRTY_LENGTH_DELTA_CHARS`` (bytes, despite the name)
MAX_DIRTY_LENGTH_DELTA = 512

#: Zed's multi-character punctuation, in its order (first match wins)
MULTI_CHAR_PUNCTUATION = (
    ">>>=", "<<=", ">>=", "...", "..=", "??=", "**=", ">>>", "::", "->", "=>", "==", "!=", "<=",
    ">=", "&&", "||", "<<", ">>", "..", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "++", "--",
    "**", "??", "?.", ":=", "<-", "//", "/*", "*/",
)  # fmt: skip

#: one unit per match: newline run | other-whitespace run | identifier run | operator | any one character.
#: ``\\w`` is str.isalnum() or "_"; ``\\s`` is str.isspace(), minus 0x1C-0x1F, which Rust does not call whitespace.
_UNIT = re.compile(
    r"[\n\r]+|[^\S\n\r\x1c-\x1f]+|\w+|"
    + "|".join(re.escape(p) for p in MULTI_CHAR_PUNCTUATION)
    + r"|.",
    re.DOTALL,
)


def units(text: str) -> list[str]:
    """Zed's comparison units of ``text`` (identifier runs, newline runs, space runs, punctuation)."""
    return _UNIT.findall(text)


def _rows(a: Sequence[str], b: Sequence[str]) -> list[int]:
    """Bit-parallel LCS rows: ``dp[i][j] = j - popcount(rows[i] & ((1 << j) - 1))``."""
    m = len(b)
    full = (1 << m) - 1
    match: dict[str, int] = {}
    for j, tok in enumerate(b):
        match[tok] = match.get(tok, 0) | (1 << j)
    v = full
    rows = [v]
    for tok in a:
        u = v & match.get(tok, 0)
        v = ((v + u) | (v - u)) & full
        rows.append(v)
    return rows


def _dp(rows: list[int], i: int, j: int) -> int:
    return j - (rows[i] & ((1 << j) - 1)).bit_count()


def lcs_keep_masks(
    a: Sequence[str], b: Sequence[str], *, want_a: bool = True, want_b: bool = True
) -> tuple[list[bool], list[bool]]:
    """Zed's ``fill_lcs_keep_masks``: which items of ``a`` and of ``b`` lie on its LCS."""
    keep_a, keep_b = [False] * len(a), [False] * len(b)
    if not a or not b:
        return keep_a, keep_b
    if len(a) == len(b) and list(a) == list(b):
        return [True] * len(a), [True] * len(b)
    prefix = 0
    for x, y in zip(a, b):
        if x != y:
            break
        prefix += 1
    suffix = 0
    max_suffix = min(len(a), len(b)) - prefix
    while suffix < max_suffix and a[len(a) - 1 - suffix] == b[len(b) - 1 - suffix]:
        suffix += 1
    for k in range(prefix):
        keep_a[k] = keep_b[k] = True
    for k in range(suffix):
        keep_a[len(a) - suffix + k] = True
        keep_b[len(b) - suffix + k] = True
    a_mid, b_mid = a[prefix : len(a) - suffix], b[prefix : len(b) - suffix]
    if not a_mid or not b_mid:
        return keep_a, keep_b
    rows = _rows(a_mid, b_mid)
    if want_a:
        i, j = len(a_mid), len(b_mid)
        while i > 0 and j > 0:
            if a_mid[i - 1] == b_mid[j - 1]:
                keep_a[prefix + i - 1] = True
                i -= 1
                j -= 1
            elif _dp(rows, i - 1, j) >= _dp(rows, i, j - 1):
                i -= 1
            else:
                j -= 1
    if want_b:
        i, j = len(a_mid), len(b_mid)
        while i > 0 and j > 0:
            if a_mid[i - 1] == b_mid[j - 1]:
                keep_b[prefix + j - 1] = True
                i -= 1
                j -= 1
            elif _dp(rows, i, j - 1) >= _dp(rows, i - 1, j):
                j -= 1
            else:
                i -= 1
    return keep_a, keep_b


def _nbytes(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def _sizes(parts: list[str], text: str) -> list[int]:
    """UTF-8 sizes of ``parts`` (of ``text``); an ASCII text's are its lengths."""
    if text.isascii():
        return list(map(len, parts))
    return [len(u) if u.isascii() else _nbytes(u) for u in parts]


def compute_kept_rate(base: str, candidate: str, reference: str) -> KeptRate:
    """Zed's ``compute_kept_rate(base, candidate, reference)`` (see the module docstring)."""
    if base == candidate == reference:
        return KeptRate(candidate_new=0, reference_new=0, candidate_deleted=0, reference_deleted=0, kept=0,
                        correctly_deleted=0, discarded=0, context=_nbytes(candidate), kept_rate=1.0,
                        recall_rate=1.0)
    nb, nc, nr = _nbytes(base), _nbytes(candidate), _nbytes(reference)
    if abs(abs(nc - nb) - abs(nr - nb)) > MAX_DIRTY_LENGTH_DELTA:
        cand_new = abs(nc - nb)
        return KeptRate(candidate_new=cand_new, reference_new=abs(nr - nb), candidate_deleted=0,
                        reference_deleted=0, kept=0, correctly_deleted=0, discarded=cand_new, context=0,
                        kept_rate=0.0, recall_rate=0.0)
    b_units, c_units, r_units = units(base), units(candidate), units(reference)
    b_len, c_len, r_len = _sizes(b_units, base), _sizes(c_units, candidate), _sizes(r_units, reference)

    c_in_base, base_in_c = lcs_keep_masks(c_units, b_units)
    r_in_base, base_in_r = lcs_keep_masks(r_units, b_units)
    c_new = [(u, n) for u, n, ctx in zip(c_units, c_len, c_in_base) if not ctx]
    r_new = [u for u, ctx in zip(r_units, r_in_base) if not ctx]
    cand_new = sum(n for _, n in c_new)
    context = sum(n for n, ctx in zip(c_len, c_in_base) if ctx)
    ref_new = sum(n for n, ctx in zip(r_len, r_in_base) if not ctx)

    keep, _ = lcs_keep_masks([u for u, _ in c_new], r_new, want_b=False)
    kept = sum(n for (_, n), k in zip(c_new, keep) if k)
    cand_deleted = sum(n for n, k in zip(b_len, base_in_c) if not k)
    ref_deleted = sum(n for n, k in zip(b_len, base_in_r) if not k)
    correctly_deleted = sum(n for n, kc, kr in zip(b_len, base_in_c, base_in_r) if not kc and not kr)

    matched = kept + correctly_deleted
    cand_edit = cand_new + cand_deleted
    ref_edit = ref_new + ref_deleted
    kept_rate = (1.0 if ref_edit == 0 else 0.0) if cand_edit == 0 else matched / cand_edit
    recall_rate = (1.0 if cand_edit == 0 else 0.0) if ref_edit == 0 else matched / ref_edit
    return KeptRate(candidate_new=cand_new, reference_new=ref_new, candidate_deleted=cand_deleted,
                    reference_deleted=ref_deleted, kept=kept, correctly_deleted=correctly_deleted,
                    discarded=cand_new - kept, context=context, kept_rate=kept_rate, recall_rate=recall_rate)


def with_production_kept_rate(example: SettledExample) -> SettledExample:
    """``example`` with Zed's kept rate of its production prediction filled in (unchanged without one).

    base = the region when the prediction was requested, candidate = the production
    prediction, reference = the settled text.
    """
    if example.production_prediction is None or example.production_kept_rate is not None:
        return example
    rate = compute_kept_rate(example.original_text, example.production_prediction, example.settled_text)
    return msgspec.structs.replace(example, production_kept_rate=rate)
