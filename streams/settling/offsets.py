"""Offsets in the units an editor declares (LSP ``positionEncoding``).

Editors count in UTF-8 bytes, UTF-16 code units or code points ("utf-32"),
while Python strings index code points. These helpers measure text and turn a
unit offset into a ``str`` index. They run on every edit that touches a region,
so ASCII text (where all three encodings agree) never gets encoded.

Why the error cases matter: an offset that lands inside a character (the middle
of a surrogate pair or of a multi-byte UTF-8 sequence) means the editor and we
disagree about the text, and silently rounding would corrupt a training example.
"""

from __future__ import annotations

from typing import Literal

from settle.schemas.events import OffsetEncoding

__all__ = [
    "OffsetEncoding",
    "OffsetError",
    "units_len",
    "to_index",
    "to_units",
]

OffsetErrorReason = Literal["out_of_range", "splits_character", "invalid_text"]


class OffsetError(ValueError):
    """An offset that cannot be mapped onto the text; ``reason`` is a stable code."""

    def __init__(self, reason: OffsetErrorReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: OffsetErrorReason = reason


def _encode(text: str, codec: str) -> bytes:
    # Strict: a lone surrogate has no UTF-8/UTF-16 form, so its length in units
    # is undefined. (msgspec's decoders never produce one; hand-built events can.)
    try:
        return text.encode(codec)
    except UnicodeEncodeError as exc:
        raise OffsetError("invalid_text", f"text is not valid Unicode ({exc.reason})") from None


def units_len(text: str, encoding: OffsetEncoding) -> int:
    """Length of ``text`` in ``encoding`` units (bytes, UTF-16 code units, code points)."""
    if encoding == "utf-32" or text.isascii():
        return len(text)
    if encoding == "utf-8":
        return len(_encode(text, "utf-8"))
    if encoding == "utf-16":
        return len(_encode(text, "utf-16-le")) >> 1
    raise ValueError(f"unknown encoding {encoding!r}")


def to_index(text: str, offset: int, encoding: OffsetEncoding) -> int:
    """The ``str`` index of unit ``offset`` within ``text``.

    Raises OffsetError("out_of_range") past the end (or below 0) and
    OffsetError("splits_character") when the offset is inside one character.
    """
    if offset < 0:
        raise OffsetError("out_of_range", f"offset {offset} is negative")
    if encoding == "utf-32" or text.isascii():
        if offset > len(text):
            raise OffsetError("out_of_range", f"offset {offset} > text length {len(text)}")
        return offset
    if encoding == "utf-8":
        data = _encode(text, "utf-8")
        if offset > len(data):
            raise OffsetError("out_of_range", f"offset {offset} > text length {len(data)} bytes")
        if offset < len(data) and (data[offset] & 0xC0) == 0x80:
            raise OffsetError(
                "splits_character", f"byte offset {offset} is inside a multi-byte UTF-8 character"
            )
        # Code points before the offset = bytes that are not continuation bytes.
        return len(data[:offset].decode("utf-8"))
    if encoding == "utf-16":
        data = _encode(text, "utf-16-le")
        size = len(data) >> 1
        if offset > size:
            raise OffsetError("out_of_range", f"offset {offset} > text length {size} UTF-16 units")
        if offset < size and 0xDC <= data[2 * offset + 1] <= 0xDF:
            raise OffsetError(
                "splits_character", f"UTF-16 offset {offset} is inside a surrogate pair"
            )
        return len(data[: 2 * offset].decode("utf-16-le"))
    raise ValueError(f"unknown encoding {encoding!r}")


def to_units(text: str, index: int, encoding: OffsetEncoding) -> int:
    """Inverse of :func:`to_index`: the unit offset of ``str`` index ``index``."""
    if not 0 <= index <= len(text):
        raise OffsetError("out_of_range", f"index {index} outside 0..{len(text)}")
    return units_len(text[:index], encoding)
