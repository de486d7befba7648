"""Records settle writes: settled examples, drops and dead letters."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from .events import OffsetEncoding, PromptContext


class KeptRate(Struct, frozen=True, kw_only=True):
    """Zed's kept-rate breakdown of one prediction against the settled text (sizes in UTF-8 bytes).

    ``settle.streams.scoring.kept_rate`` computes it (its docstring gives Zed's definition);
    the field names follow Zed's ``edit_bytes_*`` report fields without the prefix.
    """

    candidate_new: int
    reference_new: int
    candidate_deleted: int
    reference_deleted: int
    kept: int
    correctly_deleted: int
    discarded: int
    context: int
    #: (kept + correctly deleted) / everything the prediction changed
    kept_rate: float
    #: (kept + correctly deleted) / everything the user changed
    recall_rate: float


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
    #: Zed's kept rate of ``production_prediction`` against ``settled_text`` (None without a prediction)
    production_kept_rate: KeptRate | None = None


#: why a region never became an example: "ttl" (still edited at birth + ttl),
#: "too_large", "no_consent", "missed_edit" (an edit of its buffer was rejected or
#: unreadable), "contradicted" (a request's text disagreed with the tracked text),
#: "unconfirmed" (its quiet period was decided by the partition clock, not by its
#: own buffer, under ``unconfirmed="drop"``)
DropReason = Literal["ttl", "too_large", "no_consent", "missed_edit", "contradicted", "unconfirmed"]


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
