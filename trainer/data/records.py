"""Decode training records: `kept` values and offline JSONL files into examples, or a counted reason.

Its own module because the topic reader and the offline files share one notion of "a usable
record" and one set of stable reason codes (``empty``, ``malformed``, ``not_an_object``,
``unsupported_version``, ``not_scored``, ``invalid_schema``) for counting what was refused. Pure:
no Kafka here (the topic side is ``kept_topic``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import msgspec

from settle.schemas.codecs import InvalidRecord, classify
from settle.schemas.events import SCHEMA_VERSION
from settle.schemas.examples import SettledExample
from settle.schemas.jsonl import read_lines
from settle.schemas.scored import ScoredExample

__all__ = ["E", "InvalidTrainingRecord", "as_settled", "decode_example", "decode_kept", "load_jsonl"]

#: a training item: a bare SettledExample or a ScoredExample carrying one
E = TypeVar("E", SettledExample, ScoredExample)


def as_settled(item: SettledExample | ScoredExample) -> SettledExample:
    """The SettledExample inside ``item`` (a ScoredExample's ``.example``), or ``item`` itself."""
    return item.example if isinstance(item, ScoredExample) else item


class InvalidTrainingRecord(InvalidRecord):
    """A value that is not a usable example; ``reason`` is a stable code for counting."""


_scored_dec = msgspec.json.Decoder(ScoredExample)
_settled_dec = msgspec.json.Decoder(SettledExample)


def _classify(raw: bytes, expect_scored: bool, exc: msgspec.DecodeError) -> InvalidTrainingRecord:
    """The codecs' one classifier, plus what only training records can get wrong."""

    def check(generic: dict[str, Any]) -> InvalidRecord | None:
        nested = generic.get("example")
        if isinstance(nested, dict) and nested.get("v", SCHEMA_VERSION) != SCHEMA_VERSION:
            return InvalidRecord("unsupported_version", f"schema version {nested.get('v')!r}, this reads 1")
        if expect_scored and "example" not in generic and "original_text" in generic:
            return InvalidRecord("not_scored", "a bare SettledExample where a ScoredExample was expected")
        return None

    found = classify(raw, "json", exc, invalid="invalid_schema", check=check)
    return InvalidTrainingRecord(found.reason, found.message)


def decode_kept(raw: bytes | None) -> ScoredExample:
    """One `kept` value (a JSON ScoredExample) or :class:`InvalidTrainingRecord`.

    A bare SettledExample on `kept` is rejected (``not_scored``): it never went
    through the band, so training on it would bypass the filter.
    """
    if not raw:
        raise InvalidTrainingRecord("empty", "no value (tombstone or empty record)")
    try:
        return _scored_dec.decode(raw)
    except msgspec.DecodeError as exc:
        raise _classify(raw, True, exc) from None


def decode_example(raw: bytes) -> SettledExample:
    """A JSON ScoredExample (its ``.example``) or a bare SettledExample, for offline files."""
    if not raw.strip():
        raise InvalidTrainingRecord("empty", "empty line")
    try:
        generic = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:  # the shared classifier: byte_order_mark, invalid_utf8, ... else malformed
        raise _classify(raw, False, exc) from None
    scored = isinstance(generic, dict) and "example" in generic
    try:
        return _scored_dec.decode(raw).example if scored else _settled_dec.decode(raw)
    except msgspec.DecodeError as exc:
        raise _classify(raw, False, exc) from None


def load_jsonl(path: str | Path) -> list[SettledExample]:
    """Examples from a JSONL file of ScoredExample or SettledExample lines (mixed is fine).

    Lines come from the one JSONL reader (``settle.schemas.jsonl.read_lines``; blank lines
    skipped); any other bad line raises ``InvalidTrainingRecord`` naming the file and line
    (offline files are curated: a bad line is a bug to see, not a record to count).
    """
    out: list[SettledExample] = []
    for lineno, line in read_lines(path):
        try:
            out.append(decode_example(line))
        except InvalidTrainingRecord as exc:
            raise InvalidTrainingRecord(exc.reason, f"{path}:{lineno}: {exc.message}") from None
    return out
