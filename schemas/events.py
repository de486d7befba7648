"""Telemetry events on the `edits` topic.

Editors in any language produce these, so the wire shape is the contract: a
tagged union on ``kind``, every value versioned with ``v``. Offsets are in the
units the event declares (LSP's positionEncoding), so an editor never has to
convert its native string indices.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

SCHEMA_VERSION = 1

#: LSP positionEncoding names; "utf-32" counts code points.
OffsetEncoding = Literal["utf-8", "utf-16", "utf-32"]

NonNegative = Annotated[int, Meta(ge=0)]
EventTimeMs = Annotated[int, Meta(ge=0, description="event time, ms since the Unix epoch")]

EditOrigin = Literal[
    "typed",
    "deleted",
    "paste",
    "undo",
    "redo",
    "format",
    "accepted_prediction",
    "agent",
    "rename",
    "other",
]


class Span(Struct, frozen=True, forbid_unknown_fields=False):
    """Half-open range [start, end) in buffer coordinates."""

    start: NonNegative
    end: NonNegative


class Replacement(Struct, frozen=True):
    """Replace [start, end) of the buffer with ``text``.

    Replacements in one event apply in order, each in the coordinates left by
    the previous one (as LSP's didChange does).
    """

    start: NonNegative
    end: NonNegative
    text: str


class EditStep(Struct, frozen=True):
    """One recent edit shown to the model as context (already a diff)."""

    path: str
    old_text: str
    new_text: str
    time_ms: EventTimeMs | None = None


class Excerpt(Struct, frozen=True):
    """A piece of some file shown to the model as context."""

    path: str
    text: str
    start_line: NonNegative = 0


class Diagnostic(Struct, frozen=True):
    message: str
    severity: Literal["error", "warning", "info", "hint"] = "error"
    span: Span | None = None


class PromptContext(Struct, frozen=True):
    """What the editor knew when it asked for a prediction."""

    edit_history: list[EditStep] = []
    excerpt: Excerpt | None = None
    related: list[Excerpt] = []
    diagnostics: list[Diagnostic] = []


class Tick(Struct, frozen=True, tag="tick", tag_field="kind", kw_only=True):
    """Carries the wall clock into a partition so a quiet partition still settles.

    Ticks are records in `edits`, so a replay sees them at the same positions as
    the live run did.
    """

    v: Literal[1] = 1
    time_ms: EventTimeMs
    source: str = ""


class _BufferEvent(Struct, frozen=True, tag_field="kind", kw_only=True):
    v: Literal[1] = 1
    time_ms: EventTimeMs
    session_id: Annotated[str, Meta(min_length=1, max_length=256)]
    path: Annotated[str, Meta(min_length=1, max_length=4096)]
    consent: bool
    encoding: OffsetEncoding = "utf-16"


class PredictionRequested(_BufferEvent, tag="prediction_requested"):
    """Births a region: the editable range the production model was asked to rewrite."""

    request_id: Annotated[str, Meta(min_length=1, max_length=256)]
    region: Span
    region_text: str
    cursor: NonNegative
    context: PromptContext = PromptContext()
    production_prediction: str | None = None
    production_model: str | None = None


class BufferEdited(_BufferEvent, tag="buffer_edited"):
    replacements: Annotated[list[Replacement], Meta(min_length=1)]
    origin: EditOrigin = "typed"


BufferEvent = PredictionRequested | BufferEdited
Event = PredictionRequested | BufferEdited | Tick


def buffer_key(session_id: str, path: str) -> str:
    """Kafka key of a buffer: every event of one buffer lands in one partition, in order."""
    return f"{session_id}\x1f{path}"


__all__ = [
    "SCHEMA_VERSION",
    "OffsetEncoding",
    "EditOrigin",
    "Span",
    "Replacement",
    "EditStep",
    "Excerpt",
    "Diagnostic",
    "PromptContext",
    "Tick",
    "PredictionRequested",
    "BufferEdited",
    "BufferEvent",
    "Event",
    "buffer_key",
    "msgspec",
]
