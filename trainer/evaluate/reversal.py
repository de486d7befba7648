"""Reversal ratio: how much of a prediction undoes the edit the user just made, in [0, 1].

Its own module because a model that "helpfully" reverts what the user typed is the failure users
notice first, and the gate checks it separately from delta-chrF. The definition follows Zed's
edit-prediction evaluation (our own implementation; no code copied):
https://github.com/zed-industries/zed ``crates/edit_prediction_metrics/src/reversal.rs``
(``compute_reversal_overlap``, ``compute_prediction_reversal_ratio_from_history``) and
``src/tokenize.rs``; older copies in ``crates/edit_prediction_cli/src/reversal_tracking.rs``.

Pure Python plus rapidfuzz for LCS lengths; deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from difflib import SequenceMatcher

from rapidfuzz.distance import Indel, LCSseq

from settle.schemas.events import EditStep

__all__ = ["reversal_ratio", "text_before_last_edit"]


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
