"""Decoding `kept` values and offline JSONL files, with a stable reason for every refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from settle.schemas.codecs import encode
from settle.trainer.data.records import InvalidTrainingRecord, decode_kept, load_jsonl
from tests.support.examples import make, scored

# --------------------------------------------------------------------------- helpers

# --------------------------------------------------------------------------- decoding and files


def test_load_jsonl_accepts_scored_and_settled_lines(tmp_path: Path) -> None:
    a, b = make("a"), make("b", "y\n", "z\n")
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(encode(scored(a)) + b"\n\n" + encode(b) + b"\n")
    assert load_jsonl(path) == [a, b]
    path.write_bytes(encode(a) + b"\n" + b'{"id": "broken"}\n')
    with pytest.raises(InvalidTrainingRecord, match=r"mixed.jsonl:2") as exc:
        load_jsonl(path)
    assert exc.value.reason == "invalid_schema"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"not json{", "malformed"),
        (b"[1, 2]", "not_an_object"),
        (b'{"v": 2, "id": "x"}', "unsupported_version"),
        (encode(make("a")), "not_scored"),
        (b'{"id": "x", "example": {}}', "invalid_schema"),
    ],
)
def test_decode_kept_classifies_bad_values(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidTrainingRecord) as exc:
        decode_kept(raw)
    assert exc.value.reason == reason
