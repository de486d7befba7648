"""Zed's SettledEditPrediction reports mapped to settled examples (consent, join, kept rate)."""

from __future__ import annotations

import msgspec

from settle.schemas.events import PredictionRequested, PromptContext, Span
from settle.streams.ingest.zed_settled import decode_batch, map_report
from settle.streams.settling.tracker import region_id

#: a report as Zed's client serialises SettledEditPrediction (cloud_api_types), flattened kept-chars included
REPORT = {
    "request_id": "req-1",
    "settled_editable_region": "x = 2\n",
    "ts_error_count_before_prediction": 1,
    "ts_error_count_after_prediction": 0,
    "can_collect_data": True,
    "is_in_open_source_repo": True,
    "sample_data": {
        "repository_url": "https://example.com/r.git",
        "revision": "abc",
        "editable_path": "src/a.py",
        "editable_offset_range": {"start": 10, "end": 16},
        "buffer_diagnostics": [{"severity": 1, "message": "m", "snippet": "s",
                                "snippet_buffer_row_range": {"start": 0, "end": 1},
                                "diagnostic_range_in_snippet": {"start": 0, "end": 1}}],
        "future_edit_history_events": [{"event": "BufferChange", "path": "src/a.py", "old_path": "src/a.py",
                                        "diff": "@@ -1 +1 @@\n-x = 1\n+x = 2\n", "old_range": {"start": 0, "end": 6},
                                        "new_range": {"start": 0, "end": 6}, "predicted": False,
                                        "in_open_source_repo": True}],
        "edit_events_before_quiescence": 3,
        "some_future_field": [1, 2],
    },
    "edit_bytes_candidate_new": 1, "edit_bytes_reference_new": 1, "edit_bytes_candidate_deleted": 1,
    "edit_bytes_reference_deleted": 1, "edit_bytes_kept": 1, "edit_bytes_correctly_deleted": 1,
    "edit_bytes_discarded": 0, "edit_bytes_context": 5, "edit_bytes_kept_rate": 1.0, "edit_bytes_recall_rate": 1.0,
    "example": None,
    "model_version": "zeta-2",
    "e2e_latency": 120,
}


def _request(**kw: object) -> PredictionRequested:
    base = dict(time_ms=1000, session_id="sess", path="src/a.py", consent=True, request_id="req-1",
                region=Span(10, 16), region_text="x = 1\n", cursor=14, production_prediction="x = 2\n",
                production_model="zeta-2", context=PromptContext(), encoding="utf-8")
    base.update(kw)
    return PredictionRequested(**base)  # type: ignore[arg-type]


def _report(**kw: object):
    return decode_batch(msgspec.json.encode({"predictions": [{**REPORT, **kw}]})).predictions[0]


def test_a_joined_report_becomes_a_settled_example_with_its_kept_rate() -> None:
    report = _report()
    assert report.client_kept_rate().kept_rate == 1.0
    mapped = map_report(report, _request(), settled_at_ms=20_000)
    assert mapped.outcome == "settled"
    ex = mapped.example
    assert ex.id == region_id("sess", "src/a.py", "req-1")
    assert (ex.original_text, ex.settled_text, ex.cursor) == ("x = 1\n", "x = 2\n", 4)
    assert (ex.requested_at_ms, ex.settled_at_ms, ex.edit_count) == (1000, 20_000, 3)
    assert ex.production_model == "zeta-2"
    assert ex.production_kept_rate == report.client_kept_rate()  # settle computes what Zed reported


def test_no_consent_on_either_side_is_no_example() -> None:
    assert map_report(_report(can_collect_data=False), _request(), 1).outcome == "no_consent"
    assert map_report(_report(can_collect_data=False), None, 1).outcome == "no_consent"
    assert map_report(_report(), _request(consent=False), 1).outcome == "no_consent"


def test_unmatched_and_incomplete_reports_say_why() -> None:
    assert map_report(_report(), None, 1).outcome == "unmatched_request"
    assert map_report(_report(settled_editable_region=None), _request(), 1).outcome == "no_settled_region"


def test_minimal_report_parses() -> None:
    batch = decode_batch(b'{"predictions": [{"request_id": "r", "can_collect_data": false}]}')
    assert batch.predictions[0].sample_data is None and batch.predictions[0].client_kept_rate() is None
