"""Every knob of a settle deployment, read once from the environment or the CLI.

The same settings drive the embedded broker and a real Kafka cluster; only
``bootstrap`` changes. Every number carries its range in its type (``msgspec.Meta``
bounds, ``Literal`` choices); a value outside it is refused when the settings are made,
however they are made, with a :class:`SettingError` that names its ``SETTLE_*`` variable.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from msgspec import Meta

from settle.streams.settling.safety import DEFAULT_EXCLUDED_GLOBS, SafetyPolicy
from settle.streams.settling.tracker import TrackerConfig

#: constrained numbers (the bound is checked by ``check_fields``, named by its variable)
NonNegative = Annotated[int, Meta(ge=0)]
Positive = Annotated[int, Meta(ge=1)]
Seconds = Annotated[float, Meta(gt=0)]
NonNegativeSeconds = Annotated[float, Meta(ge=0)]
Port = Annotated[int, Meta(ge=0, le=65_535)]
C = TypeVar("C")


class SettingError(ValueError):
    """A setting that cannot be read or is out of its range; the message names its environment variable."""


def check_fields(obj: object, env_prefix: str) -> None:
    """Raise SettingError for the first field of a settings dataclass outside its declared type or range."""
    for name, hint in _hints(type(obj)).items():
        value = getattr(obj, name)
        problem = _problem(hint, value)
        if problem is not None:
            raise SettingError(f"{env_prefix}{name.upper()}={value!r}: {problem}")


def from_env(cls: type[C], env_prefix: str, overrides: dict[str, object]) -> C:
    """``cls`` from ``<env_prefix><FIELD>`` variables, then explicit overrides (None = unset); SettingError
    (naming the variable) for a value that does not parse or is out of range."""
    hints = _hints(cls)
    values: dict[str, object] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        var = f"{env_prefix}{f.name.upper()}"
        raw = os.environ.get(var)
        if raw is not None:
            values[f.name] = _parse(hints[f.name], raw, var)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return replace(cls(), **values)  # type: ignore[type-var]  # __post_init__ checks the ranges


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _unwrap(hint: Any) -> tuple[Any, list[Meta]]:
    if get_origin(hint) is Annotated:
        base, *extra = get_args(hint)
        return base, [m for m in extra if isinstance(m, Meta)]
    return hint, []


_BOUNDS = (("ge", ">=", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
           ("le", "<=", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b))


def _problem(hint: Any, value: object) -> str | None:
    """What is wrong with ``value`` for a field declared as ``hint`` (None: nothing)."""
    base, metas = _unwrap(hint)
    if get_origin(base) is Literal:
        choices = get_args(base)
        return None if value in choices else f"expected one of {', '.join(map(str, choices))}"
    if base is bool:
        return None if isinstance(value, bool) else "expected a boolean"
    if base is int and (not isinstance(value, int) or isinstance(value, bool)):
        return "expected an integer"
    if base is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return "expected a number"
        if not math.isfinite(value):
            return "expected a finite number"
    for m in metas:
        for name, words, ok in _BOUNDS:
            limit = getattr(m, name)
            if limit is not None and not ok(value, limit):
                return f"must be {words} {limit}"
    return None


def _parse(hint: Any, raw: str, var: str) -> object:
    """The typed value of one environment variable (its range is checked afterwards)."""
    base, _ = _unwrap(hint)
    text = raw.strip()
    if base is bool:
        if text.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise SettingError(f"{var}={raw!r}: not a boolean (1/0, true/false, yes/no, on/off)")
        return text.lower() in ("1", "true", "yes", "on")
    try:
        if base is int:
            return int(text)
        if base is float:
            return float(text)
    except ValueError:
        raise SettingError(f"{var}={raw!r}: not {'an integer' if base is int else 'a number'}") from None
    if base is Path:
        return Path(raw)
    return raw


@dataclass(frozen=True)
class Settings:
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "settle."
    #: prefix of the topics written; empty = same as topic_prefix (a backfill sets its own)
    output_prefix: str = ""
    partitions: Positive = 4
    quiescence_ms: Positive = 10_000
    lateness_ms: NonNegative = 2_000
    ttl_ms: Positive = 300_000
    max_region_bytes: NonNegative = 4096
    #: "absorb" (an insertion at a region's boundary joins it) or "exclusive" (Zed's rule)
    boundary: Literal["absorb", "exclusive"] = "absorb"
    #: a region its own buffer never proved quiet: "emit" it or "drop" it ("unconfirmed")
    unconfirmed: Literal["emit", "drop"] = "emit"
    #: how far ahead of the partition clock a client clock is believed
    max_skew_ms: NonNegative = 60_000
    #: idle buffers' memory (redelivered request ids, clock) kept this long / this many
    memory_ms: NonNegative = 3_600_000
    max_idle_buffers: NonNegative = 100_000
    #: partition clock also runs on Kafka record timestamps (set them at ingest or by the broker)
    record_time: bool = False
    #: seconds between wall-clock ticks into assigned partitions; 0 = off (replays, backfills)
    tick_interval_s: NonNegativeSeconds = 0.0
    #: settled examples scored together (one sampling batch)
    score_batch_size: Positive = 16
    #: seconds between checkpoints of each partition's settle state; the commit point follows
    #: them, so a crash replays at most about this much input. 0 = no checkpoints: commit only
    #: below the oldest open region (holds every record up to the TTL; streams/kafka/checkpoints.py)
    checkpoint_interval_s: NonNegativeSeconds = 2.0
    #: also checkpoint once a partition holds this many records not yet committed
    checkpoint_max_held: NonNegative = 20_000
    group_prefix: str = "settle"
    data_dir: Path = Path("var/worker")
    #: faster rejoin after a crash than Kafka's defaults (see NOTES.md)
    session_timeout_s: Seconds = 6.0
    heartbeat_interval_s: Seconds = 1.0
    #: Kafka security (every client, through streams/kafka/security.py): PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    security_protocol: str = "PLAINTEXT"
    #: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_* protocols)
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    #: CA bundle that signed the brokers' certificates; empty = the system's CAs
    ssl_cafile: str = ""
    #: client certificate and key (mutual TLS); empty = none
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_password: str = field(default="", repr=False)
    ssl_check_hostname: bool = True
    #: safe to keep (streams/settling/safety.py): globs of files never settled, added to
    #: Zed's default exclusions (comma-separated, e.g. "**/*.secret,private/**")
    excluded_globs: str = ""
    #: replace secrets in every text field with <secret:TYPE> placeholders
    scrub_secrets: bool = True
    #: settled examples per session / per repository per cap window (event time); 0 = no cap
    max_per_session: NonNegative = 2_000
    max_per_repository: NonNegative = 20_000
    cap_window_ms: Positive = 3_600_000
    #: how long `dead-letter` keeps a rejected record (its raw bytes included); -1 = forever
    dead_letter_retention_ms: Annotated[int, Meta(ge=-1)] = 7 * 24 * 3_600_000
    #: Prometheus metrics port of workers, scorers and the trainer; 0 = off (--metrics-port overrides)
    metrics_port: Port = 0

    def __post_init__(self) -> None:
        check_fields(self, "SETTLE_")
        if self.heartbeat_interval_s >= self.session_timeout_s:
            raise SettingError(f"SETTLE_HEARTBEAT_INTERVAL_S={self.heartbeat_interval_s!r}: must be below "
                               f"SETTLE_SESSION_TIMEOUT_S={self.session_timeout_s!r}")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def output_topic(self, name: str) -> str:
        return f"{self.output_prefix or self.topic_prefix}{name}"

    @property
    def tracker(self) -> TrackerConfig:
        return TrackerConfig(
            quiescence_ms=self.quiescence_ms,
            lateness_ms=self.lateness_ms,
            ttl_ms=self.ttl_ms,
            max_region_bytes=self.max_region_bytes,
            boundary=self.boundary,
            unconfirmed=self.unconfirmed,
            max_skew_ms=self.max_skew_ms,
            memory_ms=self.memory_ms,
            max_idle_buffers=self.max_idle_buffers,
        )

    @property
    def safety(self) -> SafetyPolicy:
        extra = tuple(g.strip() for g in self.excluded_globs.split(",") if g.strip())
        return SafetyPolicy(
            excluded_globs=DEFAULT_EXCLUDED_GLOBS + extra,
            scrub_secrets=self.scrub_secrets,
            max_per_session=self.max_per_session,
            max_per_repository=self.max_per_repository,
            cap_window_ms=self.cap_window_ms,
        )

    @classmethod
    def from_env(cls, **overrides: object) -> "Settings":
        """``SETTLE_<FIELD>`` environment variables, then explicit overrides (None = unset).

        Raises SettingError (a ValueError) naming the variable of a value that does not
        parse or is out of range."""
        return from_env(cls, "SETTLE_", overrides)


#: logical topic names (prefixed at use)
EDITS, SETTLED, SCORED, KEPT, DEAD_LETTER, MODELS = (
    "edits",
    "settled",
    "scored",
    "kept",
    "dead-letter",
    "models",
)
ALL_TOPICS = (EDITS, SETTLED, SCORED, KEPT, DEAD_LETTER, MODELS)
#: the settle workers' own state (streams/kafka/checkpoints.py); not a data topic
CHECKPOINTS = "settle-checkpoints"
