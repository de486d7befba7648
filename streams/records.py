"""Records the pure cores hand back to their shells: what to produce, and the one dead-letter builder.

The settle and scoring shells only move these to the broker, so every decision
about what goes where (including every dead letter and its reason) is made in
code that is unit-tested without Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass

from settle.schemas.codecs import encode
from settle.schemas.examples import DeadLetter


@dataclass(frozen=True, slots=True)
class Output:
    """A record to produce: logical topic name (prefixed by the shell), key, value."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class Consumed:
    """A record as consumed: where it came from, and its raw bytes (a tombstone is ``b""``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    #: Kafka record timestamp (ms since the epoch); None when the source has none (files)
    timestamp_ms: int | None = None


def dead_letter(source: Consumed, reason: str, error: str, agent: str) -> Output:
    """The `dead-letter` record for ``source``: its raw bytes, a stable reason code and the error text."""
    letter = DeadLetter(
        reason=reason, error=error, source_topic=source.topic, partition=source.partition,
        offset=source.offset, key=source.key, value=source.value, agent=agent,
    )
    return Output("dead-letter", source.key, encode(letter))
