"""Dead-letter reasons say what is wrong with a value, not what the fallback parser tripped on."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from settle.schemas.codecs import InvalidRecord, buffer_of, decode_event

TICK = b'{"kind": "tick", "time_ms": 1, "source": "%s"}'


@pytest.mark.parametrize(
    ("raw", "reason", "says"),
    [
        (b"\xef\xbb\xbf" + TICK % b"w", "byte_order_mark", "byte order mark"),
        (b"  \xef\xbb\xbf" + TICK % b"w", "byte_order_mark", "byte order mark"),
        (TICK % b"\\ud800", "lone_surrogate", "\\ud800"),
        (TICK % b"\\udc00x", "lone_surrogate", "\\udc00"),
        (TICK % b"a\\ud83d\\ud83d\\ude00", "lone_surrogate", "\\ud83d"),
        (TICK % b"\\ud83dx\\ude00", "lone_surrogate", "\\ud83d"),
        (TICK % b"\xff", "invalid_utf8", "UTF-8"),
        (b"\x81\xc1", "malformed", "msgpack"),
        (b"{not json", "malformed", "json"),
    ],
)
def test_reason_names_the_problem(raw: bytes, reason: str, says: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        decode_event(raw)
    assert info.value.reason == reason and says in info.value.message


@pytest.mark.parametrize("source", [b"\\\\ud800", b"\\ud83d\\ude00", b"\\u00e9"])
def test_escaped_backslashes_and_whole_pairs_are_fine(source: bytes) -> None:
    decode_event(TICK % source)


def test_buffer_of_a_value_that_failed() -> None:
    big = b'{"kind": "buffer_edited", "session_id": "s", "path": "p.py", "text": "' + b"x" * 300_000 + b'"}'
    assert buffer_of(big) == ("s", "p.py", None)
    assert buffer_of(b"\xef\xbb\xbf" + big.replace(b'"kind"', b'"time_ms": 7, "kind"')) == ("s", "p.py", 7)
    assert buffer_of(b"") is None and buffer_of(b"[1]") is None and buffer_of(TICK % b"w") is None


# -- one classifier for every decoder ------------------------------------------------------------

def _decoders() -> dict[str, Callable[[bytes], object]]:
    from settle.schemas.codecs import decode_dead_letter, decode_model, decode_scored, decode_settled
    from settle.streams.ingest.zed_settled import decode_batch
    from settle.trainer.data.records import decode_example, decode_kept

    return {"edits": decode_event, "settled": decode_settled, "scored": decode_scored, "models": decode_model,
            "dead-letter": decode_dead_letter, "kept": decode_kept, "offline example": decode_example,
            "zed batch": decode_batch}


OBJECT = b'{"kind": "tick", "time_ms": 1, "source": "w", "request_id": "x"}'


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xef\xbb\xbf" + OBJECT, "byte_order_mark"),  # was "Expected `object`, got `int`" for settled
        (b"\xff\xfe" + OBJECT, "invalid_utf8"),  # a UTF-16 BOM: was "malformed" (read as msgpack)
        (b"\xfe\xff" + OBJECT, "invalid_utf8"),
        (b"\xff\xfe{\x00\"\x00", "invalid_utf8"),  # UTF-16 LE text
        (b"\xe9t\xe9", "invalid_utf8"),  # Latin-1 text, first byte >= 0x80
        (OBJECT.replace(b'"w"', b'"\xff"'), "invalid_utf8"),
        (OBJECT.replace(b'"w"', b'"\\ud800"'), "lone_surrogate"),
        (b"{not json", "malformed"),
        (b"[1, 2]", "not_an_object"),
    ],
)
def test_every_decoder_gives_the_same_reason(raw: bytes, reason: str) -> None:
    for topic, decoder in _decoders().items():
        with pytest.raises(InvalidRecord) as info:
            decoder(raw)
        assert info.value.reason == reason, (topic, info.value)


def test_a_readable_object_of_the_wrong_shape_names_its_topic() -> None:
    got = {}
    for topic, decoder in _decoders().items():
        with pytest.raises(InvalidRecord) as info:
            decoder(b'{"v": 1, "id": 5}')
        got[topic] = info.value.reason
    assert got == {"edits": "unknown_kind", "settled": "invalid_settled", "scored": "invalid_scored",
                   "models": "invalid_model_message", "dead-letter": "invalid_dead_letter", "kept": "invalid_schema",
                   "offline example": "invalid_schema", "zed batch": "invalid_batch"}


def test_a_classified_failure_is_still_a_decode_error() -> None:
    """Callers that guard a typed decode with ``except msgspec.DecodeError`` keep catching it."""
    import msgspec

    from settle.schemas.codecs import decode_settled

    with pytest.raises(msgspec.DecodeError):
        decode_settled(b"\xef\xbb\xbf{}")
