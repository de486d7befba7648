"""Decoding `kept` values and offline JSONL files, with a stable reason for every refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from settle.schemas.codecs import encode
from settle.schemas.events import PromptContext
from settle.schemas.examples import SettledExample
from settle.schemas.scored import BandPolicy, Decision, ScoredExample
from settle.trainer.data.records import InvalidTrainingRecord, decode_kept, load_jsonl

# --------------------------------------------------------------------------- helpers

def make(
    id_: str,
    original: str = "x = 1\n",
    settled: str = "x = 2\n",
    *,
    session: str = "s",
    path: str = "a.py",
    cursor: int = 0,
    context: PromptContext = PromptContext(),
) -> SettledExample:
    return SettledExample(
        id=id_, request_id=f"r-{id_}", session_id=session, path=path, encoding="utf-16",
        requested_at_ms=0, settled_at_ms=1, original_text=original, settled_text=settled,
        cursor=cursor, context=context,
    )


def scored(example: SettledExample, policy: BandPolicy = BandPolicy()) -> ScoredExample:
    decision = Decision(decision="keep", reason="test", samples_used=4, solved=1, solve_rate=0.25, policy=policy)
    return ScoredExample(id=example.id, example=example, decision=decision, samples=["x"], model_version="m1")


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
