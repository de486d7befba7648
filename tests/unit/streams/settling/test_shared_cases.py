"""The shared edge-case corpus: every case settles to its expected.json.

The corpus is ``../shared/cases``, copied into ``tests/data/shared_cases`` (2026-11-29) so a
clean clone tests it too; when the shared folder sits beside the checkout, it is read instead,
so new cases there are tried at once.

Each expected.json was computed by an independent whole-buffer replay, so these
pin the tracker to cutting text out of the full buffer on inputs taken from
real editor bug reports. ``region-boundary-touch`` is also checked under the
``exclusive`` boundary rule, against the Zed-anchor texts the case records.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from settle.streams.settling.partition import PartitionSettler
from settle.streams.settling.reference import settle_records
from settle.streams.settling.tracker import TrackerConfig

_SHARED = Path(__file__).resolve().parents[4].parent / "shared" / "cases"
CASES = _SHARED if _SHARED.is_dir() else Path(__file__).resolve().parents[3] / "data" / "shared_cases"
NAMES = sorted(p.name for p in CASES.iterdir() if (p / "expected.json").exists()) if CASES.is_dir() else []
FIELDS = ("request_id", "session_id", "path", "original_text", "settled_text", "requested_at_ms",
          "settled_at_ms", "cursor", "edit_count")

pytestmark = pytest.mark.skipif(not NAMES, reason=f"no shared cases at {CASES}")


def _records(name: str) -> list[bytes]:
    lines = [line.encode() for line in (CASES / name / "telemetry.jsonl").read_text("utf-8").splitlines() if line]
    if name == "tombstone-record":  # a null and an empty value between lines 1 and 2 (README)
        lines[1:1] = [b"", b""]
    return lines


def _got(name: str, config: TrackerConfig = TrackerConfig()) -> list[dict[str, object]]:
    result = settle_records(enumerate(_records(name)), config, flush=True)
    return sorted(({f: getattr(e, f) for f in FIELDS} for e in result.examples), key=_order)


def _order(d: dict[str, object]) -> tuple[str, ...]:
    return (str(d["session_id"]), str(d["path"]), str(d["request_id"]))


@pytest.mark.parametrize("name", NAMES)
def test_case_settles_as_expected(name: str) -> None:
    expected = json.loads((CASES / name / "expected.json").read_text("utf-8"))
    want = sorted(({f: e[f] for f in FIELDS} for e in expected["settled"]), key=_order)
    assert _got(name) == want
    result = settle_records(enumerate(_records(name)), flush=True)
    invalid = [(pos, reason, msg) for pos, reason, msg in result.invalid if name != "tombstone-record" or pos > 2]
    assert len(invalid) == len(expected["invalid"])
    for (pos, reason, msg), want_invalid in zip(invalid, expected["invalid"]):
        assert pos + 1 == want_invalid["line"] and reason in want_invalid["reason_any"]
        assert all(word in msg for word in want_invalid["message_must_contain"])


def test_tombstone_stream_dead_letters_and_moves_on() -> None:
    settler = PartitionSettler(0)
    outs = [settler.handle(i, b"sess-1\x1fsrc/t.py", v) for i, v in enumerate(_records("tombstone-record"))]
    assert [o.topic for o in outs[1] + outs[2]] == ["dead-letter", "dead-letter"]
    assert [o.topic for o in outs[4]] == ["settled"]  # the tombstones did not cost the region
    assert settler.safe_offset() == 5


def test_region_boundary_touch_under_the_exclusive_rule() -> None:
    name = "region-boundary-touch"
    expected = json.loads((CASES / name / "expected.json").read_text("utf-8"))
    got = {d["request_id"]: d for d in _got(name, TrackerConfig(boundary="exclusive"))}
    assert {rid: d["settled_text"] for rid, d in got.items()} == expected["zed_anchor_range_inside_texts"]
    # Nothing touched them, so each settles one quiet period after its birth.
    assert {d["edit_count"] for d in got.values()} == {0}
    assert {d["settled_at_ms"] for d in got.values()} == {1796000000000 + 10_000}
