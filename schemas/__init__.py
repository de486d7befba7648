"""Every message on every topic, as msgspec Structs, plus their codecs."""

from .codecs import InvalidRecord, decode, decode_event, encode
from .events import (
    BufferEdited,
    BufferEvent,
    Event,
    PredictionRequested,
    PromptContext,
    Replacement,
    Span,
    Tick,
    buffer_key,
)
from .examples import DeadLetter, SettledExample

__all__ = [
    "InvalidRecord",
    "decode",
    "decode_event",
    "encode",
    "BufferEdited",
    "BufferEvent",
    "Event",
    "PredictionRequested",
    "PromptContext",
    "Replacement",
    "Span",
    "Tick",
    "buffer_key",
    "DeadLetter",
    "SettledExample",
]
