"""Message schemas: codecs, failure classification, and the generated JSON Schema."""

from __future__ import annotations

import msgspec
import pytest

from settle.schemas import jsonschema_gen
from settle.schemas.codecs import MAX_EVENT_BYTES, InvalidRecord, decode, decode_event, encode
from settle.schemas.events import BufferEdited, PredictionRequested, Replacement, Span, Tick
from settle.schemas.examples import DeadLetter

EDIT = BufferEdited(
    time_ms=1_000,
    session_id="s1",
    path="pkg/mod.py",
    consent=True,
    encoding="utf-8",
    replacements=[Replacement(start=3, end=5, text="héllo")],
    origin="paste",
)
REQUEST = PredictionRequested(
    time_ms=900,
    session_id="s1",
    path="pkg/mod.py",
    consent=True,
    request_id="r1",
    region=Span(start=0, end=3),
    region_text="abc",
    cursor=1,
)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("event", [EDIT, REQUEST, Tick(time_ms=5)])
def test_round_trip(fmt: str, event: object) -> None:
    assert decode_event(encode(event, fmt)) == event  # type: ignore[arg-type]


def test_absent_version_means_current() -> None:
    assert decode_event(b'{"kind": "tick", "time_ms": 1}') == Tick(time_ms=1)


def test_json_is_tagged_and_versioned() -> None:
    obj = msgspec.json.decode(encode(EDIT))
    assert obj["kind"] == "buffer_edited" and obj["v"] == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed"),
        (b"\x81\xc1", "malformed"),
        (b"[1, 2]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b'{"v": 2, "kind": "tick", "time_ms": 1}', "unsupported_version"),
        (b'{"v": "1", "kind": "tick", "time_ms": 1}', "unsupported_version"),
        (b'{"v": 1, "kind": "cursor_moved", "time_ms": 1}', "unknown_kind"),
        (b'{"v": 1, "time_ms": 1}', "unknown_kind"),
        (b'{"v": 1, "kind": "tick"}', "invalid_event"),
        (b'{"v": 1, "kind": "tick", "time_ms": -5}', "invalid_event"),
        (
            b'{"v":1,"kind":"buffer_edited","time_ms":1,"session_id":"s","path":"p",'
            b'"consent":true,"encoding":"latin-1","replacements":[{"start":0,"end":0,"text":""}]}',
            "invalid_event",
        ),
        (
            b'{"v":1,"kind":"buffer_edited","time_ms":1,"session_id":"s","path":"p",'
            b'"consent":true,"replacements":[]}',
            "invalid_event",
        ),
    ],
)
def test_bad_values_are_classified(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        decode_event(raw)
    assert info.value.reason == reason
    assert info.value.message


def test_oversized_payload_is_rejected_before_parsing() -> None:
    raw = encode(EDIT)[:-1] + b"," + b'"pad":"' + b"x" * MAX_EVENT_BYTES + b'"}'
    with pytest.raises(InvalidRecord) as info:
        decode_event(raw)
    assert info.value.reason == "payload_too_large"


def test_dead_letter_keeps_raw_bytes() -> None:
    dl = DeadLetter(
        reason="malformed", error="x", source_topic="edits", partition=2, offset=7,
        key=b"\x00k", value=b"\xff\xfe", agent="settle",
    )
    assert decode(encode(dl), DeadLetter) == dl


def test_json_schema_files_match_structs() -> None:
    """Fails when a Struct changes and `python -m settle.schemas.jsonschema_gen` was not rerun."""
    assert jsonschema_gen.stale() == []


def test_json_schema_detects_drift(tmp_path) -> None:  # type: ignore[no-untyped-def]
    jsonschema_gen.write(tmp_path)
    (tmp_path / "event.json").write_text("{}")
    assert jsonschema_gen.stale(tmp_path) == ["event.json"]


def test_json_schema_drift_is_meaning_not_docstring_whitespace(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """msgspec 0.23 strips docstring indentation older releases kept: that is not drift; a changed word is."""
    import json

    jsonschema_gen.write(tmp_path)
    path = tmp_path / "settled_example.json"
    doc = json.loads(path.read_text())

    def edit(node, change):  # type: ignore[no-untyped-def]
        if isinstance(node, dict):
            return {k: change(v) if k == "description" and isinstance(v, str) else edit(v, change)
                    for k, v in node.items()}
        return [edit(v, change) for v in node] if isinstance(node, list) else node

    path.write_text(json.dumps(edit(doc, lambda s: s.replace(" ", "\n    ", 1)), indent=2))
    assert jsonschema_gen.stale(tmp_path) == []
    path.write_text(json.dumps(edit(doc, lambda s: s + " (changed)"), indent=2))
    assert jsonschema_gen.stale(tmp_path) == ["settled_example.json"]
