"""Records settle writes: settled examples, drops and dead letters."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from .events import OffsetEncoding, PromptContext


class SettledExample(Struct, frozen=True, kw_only=True):
    """A predicted region after the user stopped touching it.

    Every field is a function of the input events alone (no wall clock, no
    offsets), so a replay or a crash-restart re-emits byte-identical records and
    consumers can dedupe on ``id``.
    """

    v: Literal[1] = 1
    id: str
    request_id: str
    session_id: str
    path: str
    encoding: OffsetEncoding
    requested_at_ms: int
    settled_at_ms: int
    original_text: str
    settled_text: str
    #: cursor as a code-point index into ``original_text``
    cursor: int
    context: PromptContext
    production_prediction: str | None = None
    production_model: str | None = None
    #: edits that touched the region, by origin
    edit_origins: dict[str, int] = {}
    edit_count: int = 0


DropReason = Literal["ttl", "too_large", "no_consent"]


class DeadLetter(Struct, frozen=True, kw_only=True):
    """A record no agent could use, with enough provenance to find and replay it."""

    v: Literal[1] = 1
    reason: str
    error: str
    source_topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    agent: str
