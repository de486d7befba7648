from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settle.streams.scoring.distance import SampleDistances, levenshtein, normalise, sample_distances


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("kitten", "sitting", 3),  # k->s, e->i, +g
        ("flaw", "lawn", 2),  # -f, +n
        ("", "abc", 3),
        ("abc", "", 3),
        ("same", "same", 0),
        ("x = 1", "x = 42", 2),  # 1->4, +2
        ("😀", "", 1),  # one code point, though two UTF-16 units
        ("a😀b", "a😃b", 1),
        ("é", "e", 1),  # precomposed U+00E9 is one code point
        ("e\u0301", "é", 2),  # decomposed: two code points vs one, no normalisation
    ],
)
def test_levenshtein_hand_computed(a: str, b: str, expected: int) -> None:
    assert levenshtein(a, b) == expected
    assert levenshtein(b, a) == expected


def test_sample_distances_and_normalisation() -> None:
    result = sample_distances(["x = 42", "x = 1", "x = 4", "x = 4222", ""], "x = 1", "x = 42")
    assert result == SampleDistances(
        user_edit_distance=2,
        distances=[0, 2, 1, 2, 6],
        normalised=[0.0, 1.0, 0.5, 1.0, 3.0],
    )
    # copying the region is exactly "no better than not editing" whatever its length
    long_original = "a" * 500 + "b"
    assert sample_distances([long_original], long_original, "a" * 500 + "c").normalised == [1.0]


def test_zero_edit_normalises_by_one() -> None:
    result = sample_distances(["abc", "abd", ""], "abc", "abc")
    assert result.user_edit_distance == 0
    assert result.distances == [0, 1, 3]
    assert result.normalised == [0.0, 1.0, 3.0]
    assert normalise(5, 0) == 5.0
    assert normalise(3, 4) == 0.75


def test_no_samples() -> None:
    assert sample_distances([], "a", "b") == SampleDistances(user_edit_distance=1, distances=[], normalised=[])


def test_cap_keeps_values_at_or_below_it_exact() -> None:
    samples = ["x = 42", "x = 4", "x = 1", "completely different text"]
    exact = sample_distances(samples, "x = 1", "x = 42")
    capped = sample_distances(samples, "x = 1", "x = 42", cap=0.5)
    assert capped.capped_at == 2  # floor(0.5 * 2) + 1
    for e, c, n in zip(exact.distances, capped.distances, capped.normalised, strict=True):
        if e <= capped.capped_at:
            assert c == e
        else:
            assert c == capped.capped_at + 1 and n > 0.5
    assert capped.distances[-1] == 3


@pytest.mark.parametrize("cap", [-0.1, float("nan"), float("inf")])
def test_cap_must_be_finite_non_negative(cap: float) -> None:
    with pytest.raises(ValueError):
        sample_distances(["a"], "a", "b", cap=cap)


@settings(max_examples=60, deadline=None)
@given(
    samples=st.lists(st.text("abc😀", max_size=12), max_size=6),
    original=st.text("abc😀", max_size=12),
    settled=st.text("abc😀", max_size=12),
    cap=st.sampled_from([0.0, 0.34, 0.5, 1.0, 1.5]),
)
def test_cap_and_workers_agree_with_plain_distances(
    samples: list[str], original: str, settled: str, cap: float
) -> None:
    plain = sample_distances(samples, original, settled)
    assert plain.distances == [levenshtein(s, settled) for s in samples]
    assert sample_distances(samples, original, settled, workers=2) == plain
    capped = sample_distances(samples, original, settled, cap=cap, workers=2)
    for exact, got in zip(plain.normalised, capped.normalised, strict=True):
        if exact <= cap:
            assert got == exact
        else:
            assert cap < got <= exact
