"""Every knob of a settle deployment, read once from the environment or the CLI.

The same settings drive the embedded broker and a real Kafka cluster; only
``bootstrap`` changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from settle.streams.settling.safety import DEFAULT_EXCLUDED_GLOBS, SafetyPolicy
from settle.streams.settling.tracker import TrackerConfig


@dataclass(frozen=True)
class Settings:
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "settle."
    #: prefix of the topics written; empty = same as topic_prefix (a backfill sets its own)
    output_prefix: str = ""
    partitions: int = 4
    quiescence_ms: int = 10_000
    lateness_ms: int = 2_000
    ttl_ms: int = 300_000
    max_region_bytes: int = 4096
    #: "absorb" (an insertion at a region's boundary joins it) or "exclusive" (Zed's rule)
    boundary: str = "absorb"
    #: a region its own buffer never proved quiet: "emit" it or "drop" it ("unconfirmed")
    unconfirmed: str = "emit"
    #: how far ahead of the partition clock a client clock is believed
    max_skew_ms: int = 60_000
    #: idle buffers' memory (redelivered request ids, clock) kept this long / this many
    memory_ms: int = 3_600_000
    max_idle_buffers: int = 100_000
    #: partition clock also runs on Kafka record timestamps (set them at ingest or by the broker)
    record_time: bool = False
    #: seconds between wall-clock ticks into assigned partitions; 0 = off (replays, backfills)
    tick_interval_s: float = 0.0
    batch_size: int = 500
    #: settled examples scored together (one sampling batch)
    score_batch_size: int = 16
    batch_within_s: float = 0.05
    #: seconds between checkpoints of each partition's settle state; the commit point follows
    #: them, so a crash replays at most about this much input. 0 = no checkpoints: commit only
    #: below the oldest open region (holds every record up to the TTL; streams/kafka/checkpoints.py)
    checkpoint_interval_s: float = 2.0
    #: also checkpoint once a partition holds this many records not yet committed
    checkpoint_max_held: int = 20_000
    group_prefix: str = "settle"
    data_dir: Path = Path("var/worker")
    #: faster rejoin after a crash than Kafka's defaults (see NOTES.md)
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.0
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
    max_per_session: int = 2_000
    max_per_repository: int = 20_000
    cap_window_ms: int = 3_600_000
    #: how long `dead-letter` keeps a rejected record (its raw bytes included); -1 = forever
    dead_letter_retention_ms: int = 7 * 24 * 3_600_000
    #: Prometheus metrics port of workers, scorers and the trainer; 0 = off (--metrics-port overrides)
    metrics_port: int = 0

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
            boundary=self.boundary,  # type: ignore[arg-type]
            unconfirmed=self.unconfirmed,  # type: ignore[arg-type]
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
        """``SETTLE_<FIELD>`` environment variables, then explicit overrides (None = unset)."""
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get(f"SETTLE_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)


def _parse(type_name: object, raw: str) -> object:
    name = str(type_name)
    if "bool" in name:
        if raw.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError(f"not a boolean: {raw!r}")
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if "int" in name:
        return int(raw)
    if "float" in name:
        return float(raw)
    if "Path" in name:
        return Path(raw)
    return raw


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
