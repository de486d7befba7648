"""Messages on `models`: what the trainer published (or refused to), for the scorers."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct


class ModelPublished(Struct, frozen=True, kw_only=True):
    """One trainer run's verdict on a candidate student.

    Scorers hot-reload only ``status == "published"``; rejected candidates are
    recorded too, so the audit trail says why a model never went live.
    """

    v: Literal[1] = 1
    name: str
    version: str
    status: Literal["published", "rejected"]
    #: model directory (weights, tokenizer, ONNX export, metrics, data offsets)
    location: str
    created_at_ms: int
    #: the version it was fine-tuned from and evaluated against ("" for the first)
    parent_version: str = ""
    reason: str = ""
    #: evaluation of the candidate and of the parent on the same held-out set
    metrics: dict[str, float] = {}
    parent_metrics: dict[str, float] = {}
    #: `kept` offsets this version was trained on, by partition: [start, end)
    data_offsets: dict[int, tuple[int, int]] = {}
    train_examples: int = 0
    eval_examples: int = 0
