"""Zed's kept rate (settle.streams.scoring.kept_rate) on cases worked out by hand from the definition.

Each case lists the units (identifier runs, whitespace runs, newline runs, punctuation),
the LCS against the base that makes context, the new and deleted bytes, and the two rates.
"""

from __future__ import annotations

import random

import pytest

from settle.schemas.examples import SettledExample
from settle.schemas.events import PromptContext
from settle.streams.scoring.kept_rate import (
    _dp,
    _rows,
    compute_kept_rate,
    lcs_keep_masks,
    units,
    with_production_kept_rate,
)


def test_units_are_identifier_runs_space_runs_newline_runs_and_operators() -> None:
    assert units("foo_bar1 += x::y\r\n\n  z") == ["foo_bar1", " ", "+=", " ", "x", "::", "y", "\r\n\n", "  ", "z"]
    assert units("a..=b...c") == ["a", "..=", "b", "...", "c"]  # first of Zed's operators in its order
    assert units("π≠2") == ["π", "≠", "2"]


def test_replaced_literal_fully_kept() -> None:
    # base x␣=␣1⏎, candidate and reference x␣=␣2⏎: prefix "x", " ", "=", " " and suffix "⏎" are context (5 bytes);
    # "2" is new (1 byte) and "1" deleted (1 byte) on both sides: kept 1, correctly deleted 1 -> 2/2 and 2/2.
    r = compute_kept_rate("x = 1\n", "x = 2\n", "x = 2\n")
    assert (r.candidate_new, r.candidate_deleted, r.context) == (1, 1, 5)
    assert (r.kept, r.correctly_deleted, r.discarded) == (1, 1, 0)
    assert r.kept_rate == 1.0 and r.recall_rate == 1.0


def test_half_of_an_insertion_kept() -> None:
    # base foo(a)⏎; candidate adds ", b, c" (6 one-byte units), the user kept ", c":
    # reference new = ",", " ", "c" (3 bytes); LCS of the new units keeps ",", " " (prefix) and "c" (suffix).
    r = compute_kept_rate("foo(a)\n", "foo(a, b, c)\n", "foo(a, c)\n")
    assert (r.candidate_new, r.reference_new, r.kept, r.discarded, r.context) == (6, 3, 3, 3, 7)
    assert r.kept_rate == pytest.approx(3 / 6)
    assert r.recall_rate == pytest.approx(3 / 3)


def test_sizes_are_utf8_bytes() -> None:
    # candidate "π = 3⏎" on an empty base: π is 2 bytes, so 7 new bytes; the user kept "π⏎" (3 bytes).
    r = compute_kept_rate("", "π = 3\n", "π\n")
    assert (r.candidate_new, r.reference_new, r.kept) == (7, 3, 3)
    assert r.kept_rate == pytest.approx(3 / 7)
    assert r.recall_rate == 1.0


def test_tie_between_equal_length_subsequences_follows_zeds_backtracking() -> None:
    # new units [long, ␣, x] vs [x, ␣, long]: every LCS has length 1. Zed walks back from the end
    # preferring "up": (3,3) x≠long -> up; (2,3) ␣≠long -> up; (1,3) long=long: "long" (4 bytes) is kept.
    r = compute_kept_rate("", "long x", "x long")
    assert (r.candidate_new, r.kept, r.discarded) == (6, 4, 2)
    assert r.kept_rate == pytest.approx(4 / 6) and r.recall_rate == pytest.approx(4 / 6)


def test_prediction_that_changes_nothing_while_the_user_did() -> None:
    r = compute_kept_rate("a\n", "a\n", "b\n")
    assert (r.candidate_new, r.candidate_deleted, r.reference_new, r.reference_deleted) == (0, 0, 1, 1)
    assert r.kept_rate == 0.0 and r.recall_rate == 0.0


def test_prediction_the_user_undid() -> None:
    r = compute_kept_rate("a\n", "b\n", "a\n")
    assert (r.candidate_new, r.candidate_deleted, r.kept, r.correctly_deleted) == (1, 1, 0, 0)
    assert r.kept_rate == 0.0 and r.recall_rate == 0.0


def test_all_equal_is_all_context() -> None:
    r = compute_kept_rate("same π\n", "same π\n", "same π\n")
    assert (r.context, r.candidate_new, r.kept_rate, r.recall_rate) == (8, 0, 1.0, 1.0)  # "same" 4 + " " 1 + "π" 2 + "⏎" 1


def test_dirty_final_bails_out() -> None:
    # |Δcandidate| = 1 byte, |Δreference| = 600 bytes: they differ by more than 512, so both rates are 0.
    r = compute_kept_rate("", "x", "y" * 600)
    assert (r.candidate_new, r.reference_new, r.discarded, r.kept_rate, r.recall_rate) == (1, 600, 1, 0.0, 0.0)


@pytest.mark.parametrize(
    ("base", "candidate", "reference", "expected"),
    [
        # Zed's own expectations (edit_prediction_metrics/src/kept_rate.rs tests)
        ("fn example() {\n    epr\n", 'fn example() {\n    epr\neprintln!("");\n', 'fn example() {\neprintln!("");\n',
         dict(kept=14, discarded=1, kept_rate=14 / 15)),
        ("fn example() {\n    epr\n", 'fn example() {\n    eprintln!("hello world!");\n',
         'fn example() {\n    eprintln!("");\n', dict(kept=14, discarded=12)),
        ("a=fomr\nb=old\n", "a=formula;\nb=old\n", "a=formula;\nb=new\n",
         dict(candidate_new=8, kept=8, discarded=0, candidate_deleted=4, correctly_deleted=4, kept_rate=1.0,
              recall_rate=2 / 3)),
        ("foo + foo + foo + foo + foo\n" * 16, "foo + foo + prediction_token + foo + foo\n" * 16,
         "foo + foo + kept_token + foo + foo\n" * 16, dict(kept=0, correctly_deleted=48, candidate_new=256)),
    ],
)
def test_zeds_own_test_values(base: str, candidate: str, reference: str, expected: dict) -> None:
    r = compute_kept_rate(base, candidate, reference)
    for name, value in expected.items():
        assert getattr(r, name) == pytest.approx(value), name


def test_bit_parallel_table_equals_the_quadratic_one() -> None:
    rng = random.Random(0)
    for _ in range(500):
        a = [rng.choice("abc") for _ in range(rng.randint(1, 9))]
        b = [rng.choice("abc") for _ in range(rng.randint(1, 9))]
        dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                dp[i][j] = dp[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(dp[i - 1][j], dp[i][j - 1])
        rows = _rows(a, b)
        assert all(_dp(rows, i, j) == dp[i][j] for i in range(len(a) + 1) for j in range(len(b) + 1))


def test_lcs_masks_as_in_zed() -> None:
    assert lcs_keep_masks(list("abcde"), list("ace")) == ([True, False, True, False, True], [True, True, True])
    assert lcs_keep_masks([], ["x"]) == ([], [False])


def test_recorded_on_a_settled_example_with_a_prediction_only() -> None:
    base = SettledExample(id="i", request_id="r", session_id="s", path="p", encoding="utf-16", requested_at_ms=0,
                          settled_at_ms=1, original_text="x = 1\n", settled_text="x = 2\n", cursor=0,
                          context=PromptContext())
    assert with_production_kept_rate(base).production_kept_rate is None
    import msgspec

    with_pred = msgspec.structs.replace(base, production_prediction="x = 2\n")
    assert with_production_kept_rate(with_pred).production_kept_rate.kept_rate == 1.0


def _zed_masks_quadratic(a: list[str], b: list[str]) -> tuple[list[bool], list[bool]]:
    """Zed's fill_lcs_keep_masks transcribed literally (full table, no bit tricks), as the oracle."""
    keep_a, keep_b = [False] * len(a), [False] * len(b)
    if not a or not b:
        return keep_a, keep_b
    if a == b:
        return [True] * len(a), [True] * len(b)
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    q = 0
    while q < min(len(a), len(b)) - p and a[len(a) - 1 - q] == b[len(b) - 1 - q]:
        q += 1
    for k in range(p):
        keep_a[k] = keep_b[k] = True
    for k in range(q):
        keep_a[len(a) - q + k] = keep_b[len(b) - q + k] = True
    am, bm = a[p : len(a) - q], b[p : len(b) - q]
    if not am or not bm:
        return keep_a, keep_b
    dp = [[0] * (len(bm) + 1) for _ in range(len(am) + 1)]
    for i in range(1, len(am) + 1):
        for j in range(1, len(bm) + 1):
            dp[i][j] = dp[i - 1][j - 1] + 1 if am[i - 1] == bm[j - 1] else max(dp[i - 1][j], dp[i][j - 1])
    i, j = len(am), len(bm)
    while i and j:
        if am[i - 1] == bm[j - 1]:
            keep_a[p + i - 1] = True
            i, j = i - 1, j - 1
        elif dp[i - 1][j] >= dp[i][j - 1]:
            i -= 1
        else:
            j -= 1
    i, j = len(am), len(bm)
    while i and j:
        if am[i - 1] == bm[j - 1]:
            keep_b[p + j - 1] = True
            i, j = i - 1, j - 1
        elif dp[i][j - 1] >= dp[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return keep_a, keep_b


def test_masks_equal_zeds_quadratic_backtracking_on_random_sequences() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        a = [rng.choice(["x", "yy", " ", "(", "zzz"]) for _ in range(rng.randint(0, 12))]
        b = [rng.choice(["x", "yy", " ", "(", "zzz"]) for _ in range(rng.randint(0, 12))]
        assert lcs_keep_masks(a, b) == _zed_masks_quadratic(a, b), (a, b)
