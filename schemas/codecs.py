"""Encoding and decoding of topic values, with classified failures.

The fast path is one typed msgspec decode. Only when it fails do we decode
again, generically, to tell the producer *why* (a dead letter needs a reason
an operator can act on, not a stack trace).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, TypeVar

import msgspec

from .events import SCHEMA_VERSION, Event
from .examples import DeadLetter, SettledExample
from .models import ModelPublished
from .scored import ScoredExample

Format = Literal["json", "msgpack"]
T = TypeVar("T")

#: Largest accepted event value; larger ones are dead-lettered, not parsed.
MAX_EVENT_BYTES = 256 * 1024

KNOWN_KINDS = ("prediction_requested", "buffer_edited", "tick")


class InvalidRecord(msgspec.DecodeError, ValueError):
    """A value that cannot become a record of its topic; ``reason`` is a stable code.

    A ``msgspec.DecodeError`` too, so code that guards a typed decode keeps catching it,
    now with the shared classifier's reason (see :func:`classify`).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


_json_event = msgspec.json.Decoder(Event)
_msgpack_event = msgspec.msgpack.Decoder(Event)
_json_enc = msgspec.json.Encoder()
_msgpack_enc = msgspec.msgpack.Encoder()


def sniff_format(raw: bytes) -> Format:
    """JSON text starts with an ASCII byte; a msgpack map starts with 0x80 or above."""
    head = raw.lstrip()[:1]
    return "msgpack" if head and head[0] >= 0x80 else "json"


def encode(obj: Any, fmt: Format = "json") -> bytes:
    return _json_enc.encode(obj) if fmt == "json" else _msgpack_enc.encode(obj)


def decode(raw: bytes, type_: type[T], fmt: Format | None = None, *, invalid: str = "invalid_schema") -> T:
    """One value as ``type_`` (JSON or msgpack, sniffed unless ``fmt`` is given), or InvalidRecord.

    Failures go through :func:`classify`, as every topic's decoder does, so a BOM or
    bad UTF-8 reads the same everywhere; ``invalid`` is the reason for a readable
    object that is not a ``type_``.
    """
    fmt = fmt or sniff_format(raw)
    try:
        if fmt == "json":
            return msgspec.json.decode(raw, type=type_)
        return msgspec.msgpack.decode(raw, type=type_)
    except msgspec.DecodeError as exc:
        raise classify(raw, fmt, exc, invalid=invalid) from None


def decode_event(raw: bytes, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Decode one `edits` value (JSON or msgpack) or raise InvalidRecord."""
    if len(raw) > max_bytes:
        raise InvalidRecord("payload_too_large", f"{len(raw)} bytes > limit {max_bytes}")
    fmt = sniff_format(raw)
    try:
        return _json_event.decode(raw) if fmt == "json" else _msgpack_event.decode(raw)
    except msgspec.DecodeError as exc:
        raise _classify(raw, fmt, exc) from None


_BOM = b"\xef\xbb\xbf"
#: UTF-16 byte order marks (little, big endian); UTF-32 LE's starts like UTF-16 LE's
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
#: one JSON escape: a backslash and what it escapes (so "\\\\u..." is not read as \\u)
_ESCAPE = re.compile(rb"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)


def _lone_surrogate(raw: bytes) -> tuple[str, int] | None:
    """(escape, byte offset) of the first \\u escape of half a surrogate pair, if any."""
    pending: tuple[str, int] | None = None  # a high surrogate waiting for its low half
    last_end = -1
    for m in _ESCAPE.finditer(raw):
        tok = m.group(1)
        unit = int(tok[1:], 16) if len(tok) == 5 else None
        if pending is not None:
            if unit is not None and 0xDC00 <= unit <= 0xDFFF and m.start() == last_end:
                pending = None
                last_end = m.end()
                continue
            return pending
        if unit is not None and 0xD800 <= unit <= 0xDBFF:
            pending = (tok.decode("ascii"), m.start())
        elif unit is not None and 0xDC00 <= unit <= 0xDFFF:
            return tok.decode("ascii"), m.start()
        last_end = m.end()
    return pending


def _msgpack_container(head: int) -> bool:
    """Whether a first byte opens a msgpack map or array (fixmap, fixarray, array16/32, map16/32)."""
    return 0x80 <= head <= 0x9F or 0xDC <= head <= 0xDF


def _text_problem(raw: bytes) -> InvalidRecord | None:
    """Why JSON text is unreadable, when it is an encoding problem a producer can fix.

    The rule for byte order marks (README, "Bad input"): a value is UTF-8 without a BOM
    (RFC 8259 section 8.1 lets a parser refuse one); a UTF-8 BOM is ``byte_order_mark``, a
    UTF-16/32 one ``invalid_utf8``. Bytes sniffed as msgpack whose first byte cannot open a
    msgpack object are judged as text too, so Latin-1 or UTF-16 JSON reads ``invalid_utf8``.
    """
    body = raw.lstrip(b" \t\r\n")
    if body.startswith(_BOM):
        return InvalidRecord(
            "byte_order_mark",
            "the value starts with a UTF-8 byte order mark (EF BB BF); send JSON without a BOM",
        )
    if body.startswith(_UTF16_BOMS):
        return InvalidRecord(
            "invalid_utf8",
            f"the value starts with a UTF-16 byte order mark ({body[0]:02X} {body[1]:02X}): "
            "send JSON as UTF-8, without a BOM",
        )
    if sniff_format(raw) == "msgpack" and _msgpack_container(body[0]):
        return None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InvalidRecord("invalid_utf8", f"not valid UTF-8 at byte {exc.start}: {exc.reason}")
    lone = _lone_surrogate(raw)
    if lone is not None:
        escape, at = lone
        return InvalidRecord(
            "lone_surrogate",
            f"a JSON string holds \\{escape} at byte {at}: half of a UTF-16 surrogate pair"
            " without its other half, text that has no Unicode form",
        )
    return None


def classify(
    raw: bytes,
    fmt: Format,
    exc: msgspec.DecodeError,
    *,
    invalid: str,
    check: Callable[[dict[str, Any]], InvalidRecord | None] | None = None,
) -> InvalidRecord:
    """Why ``raw`` failed its typed decode: the one failure classifier of every topic's decoder.

    In order: unreadable text (``byte_order_mark``, ``invalid_utf8``, ``lone_surrogate``,
    else ``malformed``), ``not_an_object``, ``unsupported_version`` (a top-level ``v`` other
    than ``SCHEMA_VERSION``; absent means current), then the caller's own ``check`` of the
    generic object, else ``invalid`` with the typed decoder's message. Called only on the
    slow path, after the fast typed decode failed.
    """
    try:
        generic = msgspec.json.decode(raw) if fmt == "json" else msgspec.msgpack.decode(raw)
    except msgspec.DecodeError as inner:
        problem = _text_problem(raw)
        if problem is not None:
            return problem
        return InvalidRecord("malformed", f"not valid {fmt}: {inner}")
    if not isinstance(generic, dict):
        return InvalidRecord("not_an_object", f"expected an object, got {type(generic).__name__}")
    version = generic.get("v", SCHEMA_VERSION)  # absent means the current version
    if version != SCHEMA_VERSION:
        return InvalidRecord(
            "unsupported_version", f"schema version {version!r}, this worker reads {SCHEMA_VERSION}"
        )
    found = check(generic) if check is not None else None
    return found if found is not None else InvalidRecord(invalid, str(exc))


def _event_kind(generic: dict[str, Any]) -> InvalidRecord | None:
    kind = generic.get("kind")
    if kind not in KNOWN_KINDS:
        return InvalidRecord("unknown_kind", f"kind {kind!r} is not one of {', '.join(KNOWN_KINDS)}")
    return None


def _classify(raw: bytes, fmt: Format, exc: msgspec.DecodeError) -> InvalidRecord:
    return classify(raw, fmt, exc, invalid="invalid_event", check=_event_kind)


class Stray(NamedTuple):
    """What can still be read off a value that failed to decode."""

    session_id: str
    path: str
    #: its event time, when that field is readable (None otherwise)
    time_ms: int | None


def buffer_of(raw: bytes) -> Stray | None:
    """The buffer (and time) of a value that failed to decode, when they can still be told.

    The tracker must know which buffer lost an event (see Tracker.missed). Best
    effort and deliberately lenient (any size, a leading BOM skipped); None when
    the value names no buffer.
    """
    body = raw.lstrip(b" \t\r\n")
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    if not body:
        return None
    try:
        generic = msgspec.msgpack.decode(body) if sniff_format(body) == "msgpack" else msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(generic, dict):
        return None
    session, path, t = generic.get("session_id"), generic.get("path"), generic.get("time_ms")
    if isinstance(session, str) and isinstance(path, str) and session and path:
        ok = type(t) is int and t >= 0
        return Stray(session, path, t if ok else None)
    return None


def encode_settled(example: SettledExample, fmt: Format = "json") -> bytes:
    return encode(example, fmt)


def decode_settled(raw: bytes) -> SettledExample:
    """One `settled` value or InvalidRecord (a DecodeError): the classifier's reason, else ``invalid_settled``."""
    return decode(raw, SettledExample, invalid="invalid_settled")


def decode_scored(raw: bytes) -> ScoredExample:
    """One `scored` (or `kept`) value or InvalidRecord: the classifier's reason, else ``invalid_scored``."""
    return decode(raw, ScoredExample, invalid="invalid_scored")


def decode_model(raw: bytes) -> ModelPublished:
    """One `models` value or InvalidRecord: the classifier's reason, else ``invalid_model_message``."""
    return decode(raw, ModelPublished, invalid="invalid_model_message")


def decode_dead_letter(raw: bytes) -> DeadLetter:
    """One `dead-letter` value or InvalidRecord: the classifier's reason, else ``invalid_dead_letter``."""
    return decode(raw, DeadLetter, invalid="invalid_dead_letter")
