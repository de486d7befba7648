"""HTTP request bodies to raw event values: decompression with a size bound, JSON lines or arrays.

Pure: no web framework here. Every value this yields still has to pass
``settle.schemas.decode_event`` (the stream's own decoder); this module only
finds where one value ends and the next begins.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import msgspec

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: byte order marks and the reason the stream's decoder gives a value that starts with one
_BOMS = {b"\xef\xbb\xbf": "byte_order_mark", b"\xff\xfe": "invalid_utf8", b"\xfe\xff": "invalid_utf8"}


class BodyError(ValueError):
    """A body that cannot be read at all; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def content_coding(header: str | None, body: bytes) -> str:
    """The body's coding: the Content-Encoding header, else sniffed from gzip/zstd magic bytes."""
    coding = (header or "").strip().lower()
    if coding in ("", "identity"):
        if body.startswith(GZIP_MAGIC):
            return "gzip"
        if body.startswith(ZSTD_MAGIC):
            return "zstd"
        return "identity"
    if coding in ("gzip", "x-gzip"):
        return "gzip"
    if coding == "zstd":
        return "zstd"
    raise BodyError(415, "unsupported_encoding", f"Content-Encoding {header!r}; send identity, gzip or zstd")


def decompress(body: bytes, header: str | None, max_bytes: int) -> bytes:
    """The decoded body, refusing (413) anything that inflates past ``max_bytes``."""
    coding = content_coding(header, body)
    if coding == "identity":
        out = body
    elif coding == "gzip":
        try:
            d = zlib.decompressobj(wbits=31)
            out = d.decompress(body, max_bytes + 1)
            if len(out) <= max_bytes and not d.eof:
                raise BodyError(400, "bad_compression", "gzip stream is truncated")
        except zlib.error as exc:
            raise BodyError(400, "bad_compression", f"not valid gzip: {exc}") from None
    else:
        import zstandard

        try:
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as reader:
                out = reader.read(max_bytes + 1)
        except zstandard.ZstdError as exc:
            raise BodyError(400, "bad_compression", f"not valid zstd: {exc}") from None
    if len(out) > max_bytes:
        raise BodyError(413, "body_too_large", f"decoded body exceeds {max_bytes} bytes")
    return out


@dataclass(frozen=True)
class Item:
    """One value of a body: its 1-based position (line number, or array index + 1) and raw bytes."""

    position: int
    raw: bytes


def split_values(payload: bytes) -> list[Item]:
    """JSON lines, or one JSON array of values, as raw values (blank lines skipped).

    A body whose first non-blank byte is ``[`` is an array: each element keeps its
    exact bytes, so the stream's decoder sees what the editor sent. An array that
    is not valid JSON is a 400 (no element can be trusted to be where it seems).

    A byte order mark is not stripped (the rule of ``settle.schemas.codecs``: JSON is
    UTF-8 without a BOM): a line that starts with one is refused by the decoder as
    ``byte_order_mark`` like any other value, and an array behind one is a 400.
    """
    stripped = payload.lstrip()
    bom = next((b for b in _BOMS if stripped.startswith(b)), None)
    if bom is not None and stripped[len(bom):].lstrip(b" \t\r\n\x00").startswith(b"["):
        raise BodyError(400, _BOMS[bom], f"the body starts with a byte order mark ({bom.hex(' ').upper()}) "
                        "before its array; send JSON as UTF-8 without a BOM")
    if stripped.startswith(b"["):
        try:
            elements = msgspec.json.decode(stripped, type=list[msgspec.Raw])
        except msgspec.DecodeError as exc:
            raise BodyError(400, "malformed_array", f"body starts with '[' but is not a JSON array: {exc}") from None
        return [Item(i, bytes(raw)) for i, raw in enumerate(elements, 1)]
    items = []
    for lineno, line in enumerate(payload.split(b"\n"), 1):
        raw = line.rstrip(b"\r")
        if raw.strip():
            items.append(Item(lineno, raw))
    return items
