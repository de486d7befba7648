"""Reversal ratio (Zed): Zed's own table, hand-worked cases, reconstructing the text before the last edit.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settle.schemas.events import EditStep
from settle.trainer.evaluate.reversal import _reversal_counts, reversal_ratio, text_before_last_edit

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


# a small alphabet so that n-grams collide often
texts = st.text(alphabet="ab_( \n", max_size=14)


@settings(max_examples=200, deadline=None)
@given(texts, texts, texts)
def test_reversal_ratio_properties(before: str, original: str, prediction: str) -> None:
    r = reversal_ratio(original, prediction, None, before=before)
    assert 0.0 <= r <= 1.0
    assert reversal_ratio(original, original, None, before=before) == 0.0
    reversing, total = _reversal_counts(before, original, prediction)
    assert 0 <= reversing <= total
    assert (total == 0) == (original == prediction)
