"""Zed's client-settled reports and their mapping to settle's ``SettledExample``.

Zed's editor settles a predicted region on the client and posts batches of
reports (zstd-compressed JSON, at most 32 per request) to its server's
``/predict_edits/settled``. The wire shape below is written from the public
Rust types in zed-industries/zed, ``crates/cloud_api_types/src/cloud_api_types.rs``
(``SubmitEditPredictionSettledBatchBody``, ``SettledEditPrediction``,
``SettledEditPredictionSampleData``, ``EditPredictionSettledKeptChars`` flattened
as ``edit_bytes_*``) and ``crates/zeta_prompt`` (``Event``, ``ActiveBufferDiagnostic``).
Rust ``Range`` values arrive as ``{"start": .., "end": ..}``. Unknown fields are
ignored and most fields default, so a newer Zed still parses.

A report carries the settled text but not the text before the prediction, the
cursor, the prompt context or the prediction itself: those come from the
prediction request (a ``prediction_requested`` event the client posts first),
joined by request id (``join.RequestJoin``). Pure: no web framework, no Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec
from msgspec import Struct

from settle.schemas.codecs import classify
from settle.schemas.events import PredictionRequested
from settle.schemas.examples import KeptRate, SettledExample
from settle.streams.scoring.kept_rate import with_production_kept_rate
from settle.streams.settling.offsets import OffsetError, to_index
from settle.streams.settling.tracker import region_id

#: Zed's MAX_EDIT_PREDICTION_SETTLED_PER_REQUEST
MAX_REPORTS_PER_BATCH = 32


class ZedRange(Struct, frozen=True):
    start: int
    end: int


class ZedBufferChange(Struct, frozen=True, tag="BufferChange", tag_field="event"):
    path: str
    old_path: str
    diff: str
    old_range: ZedRange = ZedRange(0, 0)
    new_range: ZedRange = ZedRange(0, 0)
    predicted: bool = False
    in_open_source_repo: bool = False


class ZedDiagnostic(Struct, frozen=True):
    message: str
    snippet: str = ""
    severity: int | None = None
    snippet_buffer_row_range: ZedRange | None = None
    diagnostic_range_in_snippet: ZedRange | None = None


class ZedRecentFile(Struct, frozen=True):
    path: str
    cursor_position: int | None = None


class ZedSampleData(Struct, frozen=True):
    editable_path: str
    editable_offset_range: ZedRange
    repository_url: str | None = None
    revision: str | None = None
    uncommitted_diff: str | None = None
    buffer_diagnostics: list[ZedDiagnostic] = []
    future_edit_history_events: list[ZedBufferChange] = []
    navigation_history: list[ZedRecentFile] = []
    edit_events_before_quiescence: int = 0
    next_edit_cursor_offset: int | None = None


class ZedSettledReport(Struct, frozen=True):
    """One ``SettledEditPrediction``."""

    request_id: str
    can_collect_data: bool
    settled_editable_region: str | None = None
    ts_error_count_before_prediction: int = 0
    ts_error_count_after_prediction: int = 0
    is_in_open_source_repo: bool = False
    sample_data: ZedSampleData | None = None
    edit_bytes_candidate_new: int | None = None
    edit_bytes_reference_new: int | None = None
    edit_bytes_candidate_deleted: int | None = None
    edit_bytes_reference_deleted: int | None = None
    edit_bytes_kept: int | None = None
    edit_bytes_correctly_deleted: int | None = None
    edit_bytes_discarded: int | None = None
    edit_bytes_context: int | None = None
    edit_bytes_kept_rate: float | None = None
    edit_bytes_recall_rate: float | None = None
    example: msgspec.Raw | None = None
    model_version: str | None = None
    e2e_latency: int = 0

    def client_kept_rate(self) -> KeptRate | None:
        """The kept-rate breakdown Zed computed on the client, when the report has all of it."""
        values = [self.edit_bytes_candidate_new, self.edit_bytes_reference_new, self.edit_bytes_candidate_deleted,
                  self.edit_bytes_reference_deleted, self.edit_bytes_kept, self.edit_bytes_correctly_deleted,
                  self.edit_bytes_discarded, self.edit_bytes_context, self.edit_bytes_kept_rate,
                  self.edit_bytes_recall_rate]
        if any(v is None for v in values):
            return None
        names = ("candidate_new", "reference_new", "candidate_deleted", "reference_deleted", "kept",
                 "correctly_deleted", "discarded", "context", "kept_rate", "recall_rate")
        return KeptRate(**dict(zip(names, values)))  # type: ignore[arg-type]


class ZedSettledBatch(Struct, frozen=True):
    """``SubmitEditPredictionSettledBatchBody``."""

    predictions: list[ZedSettledReport]


_batch_decoder = msgspec.json.Decoder(ZedSettledBatch)


def decode_batch(payload: bytes) -> ZedSettledBatch:
    """Parse a (decompressed) batch body; raises InvalidRecord (a msgspec.DecodeError) with the shared
    classifier's reason (byte_order_mark, invalid_utf8, malformed, ...; ``invalid_batch`` for a wrong shape)."""
    try:
        return _batch_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise classify(payload, "json", exc, invalid="invalid_batch") from None


Outcome = Literal["settled", "no_consent", "unmatched_request", "no_settled_region", "invalid"]


@dataclass(frozen=True)
class Mapped:
    """What became of one report: a settled example, or the reason it did not become one."""

    outcome: Outcome
    example: SettledExample | None = None
    error: str = ""


def map_report(report: ZedSettledReport, request: PredictionRequested | None, settled_at_ms: int) -> Mapped:
    """One report (and the request it answers, if joined) as a settled example, or why not.

    Consent is checked first, on both halves: a report or a request without it
    never becomes an example (the caller must not store it anywhere either).
    """
    if not report.can_collect_data or (request is not None and not request.consent):
        return Mapped("no_consent")
    if report.settled_editable_region is None:
        return Mapped("no_settled_region", error="report has no settled_editable_region")
    if request is None:
        return Mapped("unmatched_request", error=f"no prediction request {report.request_id!r} arrived (or it aged out)")
    start = request.region.start
    try:
        cursor = to_index(request.region_text, request.cursor - start, request.encoding)
    except OffsetError as exc:
        return Mapped("invalid", error=f"request cursor: {exc}")
    sample = report.sample_data
    example = SettledExample(
        id=region_id(request.session_id, request.path, request.request_id),
        request_id=request.request_id,
        session_id=request.session_id,
        path=request.path,
        encoding=request.encoding,
        requested_at_ms=request.time_ms,
        settled_at_ms=max(settled_at_ms, request.time_ms),
        original_text=request.region_text,
        settled_text=report.settled_editable_region,
        cursor=cursor,
        context=request.context,
        production_prediction=request.production_prediction,
        production_model=request.production_model or report.model_version,
        edit_origins={},
        edit_count=sample.edit_events_before_quiescence if sample is not None else 0,
    )
    return Mapped("settled", with_production_kept_rate(example))
