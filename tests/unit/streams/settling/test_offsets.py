"""Unit-offset helpers: exact values for each encoding, plus round-trip properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settle.streams.settling.offsets import OffsetError, to_index, to_units, units_len

ENCODINGS = ("utf-8", "utf-16", "utf-32")
# 1-, 2-, 3- and 4-byte UTF-8 characters; the last two are UTF-16 surrogate pairs.
ALPHABET = "ab \né߀😀𝄞"


@pytest.mark.parametrize(
    ("text", "utf8", "utf16", "utf32"),
    [
        ("", 0, 0, 0),
        ("hello", 5, 5, 5),
        ("é", 2, 1, 1),
        ("€", 3, 1, 1),
        ("😀", 4, 2, 1),
        ("a😀é", 7, 4, 3),
    ],
)
def test_units_len(text: str, utf8: int, utf16: int, utf32: int) -> None:
    assert units_len(text, "utf-8") == utf8
    assert units_len(text, "utf-16") == utf16
    assert units_len(text, "utf-32") == utf32


def test_to_index_utf8_multibyte() -> None:
    text = "a😀é"  # bytes: a | f0 9f 98 80 | c3 a9
    assert [to_index(text, u, "utf-8") for u in (0, 1, 5, 7)] == [0, 1, 2, 3]
    for inside in (2, 3, 4, 6):
        with pytest.raises(OffsetError) as exc:
            to_index(text, inside, "utf-8")
        assert exc.value.reason == "splits_character"


def test_to_index_utf16_surrogate_pair() -> None:
    text = "a😀é"  # units: a | d83d de00 | e9
    assert [to_index(text, u, "utf-16") for u in (0, 1, 3, 4)] == [0, 1, 2, 3]
    with pytest.raises(OffsetError) as exc:
        to_index(text, 2, "utf-16")
    assert exc.value.reason == "splits_character"


def test_to_index_utf32_and_ascii_fast_path() -> None:
    assert to_index("a😀é", 2, "utf-32") == 2
    for enc in ENCODINGS:
        assert to_index("plain ascii", 6, enc) == 6


@pytest.mark.parametrize("enc", ENCODINGS)
@pytest.mark.parametrize("text", ["abc", "a😀é"])
def test_out_of_range(enc: str, text: str) -> None:
    for bad in (-1, units_len(text, enc) + 1):  # type: ignore[arg-type]
        with pytest.raises(OffsetError) as exc:
            to_index(text, bad, enc)  # type: ignore[arg-type]
        assert exc.value.reason == "out_of_range"


def test_lone_surrogate_is_invalid_text() -> None:
    with pytest.raises(OffsetError) as exc:
        units_len("a\ud800", "utf-8")
    assert exc.value.reason == "invalid_text"
    assert units_len("a\ud800", "utf-32") == 2  # code points need no encoding


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=20), st.sampled_from(ENCODINGS))
def test_roundtrip_and_boundaries(text: str, enc: str) -> None:
    """Every character boundary maps back; every other offset is refused."""
    n = units_len(text, enc)  # type: ignore[arg-type]
    codec, width = {"utf-8": ("utf-8", 1), "utf-16": ("utf-16-le", 2), "utf-32": ("utf-32-le", 4)}[
        enc
    ]
    assert n == len(text.encode(codec)) // width
    boundaries = {to_units(text, i, enc): i for i in range(len(text) + 1)}  # type: ignore[arg-type]
    for offset in range(n + 1):
        if offset in boundaries:
            assert to_index(text, offset, enc) == boundaries[offset]  # type: ignore[arg-type]
        else:
            with pytest.raises(OffsetError) as exc:
                to_index(text, offset, enc)  # type: ignore[arg-type]
            assert exc.value.reason == "splits_character"
