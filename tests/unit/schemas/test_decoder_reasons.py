"""Dead-letter reasons say what is wrong with a value, not what the fallback parser tripped on."""

from __future__ import annotations

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
