"""Settings of the ingest endpoint: ``SETTLE_INGEST_<NAME>`` variables, then CLI overrides."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from msgspec import Meta

from settle.streams.ingest.limits import parse_tokens
from settle.streams.settings import NonNegative, Port, Positive, Seconds, check_fields, from_env


@dataclass(frozen=True)
class IngestConfig:
    host: str = "127.0.0.1"
    port: Port = 8080
    #: ``client:token`` pairs, comma- or newline-separated (SETTLE_INGEST_TOKENS)
    tokens: str = ""
    #: a file of ``client:token`` lines, read at start (SETTLE_INGEST_TOKENS_FILE)
    tokens_file: str = ""
    #: largest body on the wire (compressed), bytes
    max_body_bytes: Positive = 8 * 1024 * 1024
    #: largest body once decompressed, bytes (a decompression bomb stops here)
    max_decoded_bytes: Positive = 32 * 1024 * 1024
    #: most values in one post
    max_values: Positive = 20_000
    #: events (or reports) per second per client; 0 = unlimited
    rate_per_s: Annotated[float, Meta(ge=0)] = 20_000.0
    #: largest burst per client
    burst: Annotated[float, Meta(ge=1)] = 40_000.0
    #: seconds to wait for the broker to acknowledge a post's records before answering 503
    ack_timeout_s: Seconds = 10.0
    #: answers remembered for retried posts with an Idempotency-Key (all clients together)
    idempotency_keys: NonNegative = 100_000
    #: prediction requests waiting for their Zed settled report: at most this many ...
    join_max_entries: Positive = 100_000
    #: ... and none older than this
    join_max_age_s: Seconds = 900.0

    def __post_init__(self) -> None:
        check_fields(self, "SETTLE_INGEST_")

    def token_map(self) -> dict[str, str]:
        """{token: client} from ``tokens`` and ``tokens_file``; ValueError when malformed or empty."""
        spec = self.tokens
        if self.tokens_file:
            spec += "\n" + Path(self.tokens_file).read_text()
        tokens = parse_tokens(spec)
        if not tokens:
            raise ValueError("no client tokens: set SETTLE_INGEST_TOKENS=client:token or --tokens-file")
        return tokens

    @classmethod
    def from_env(cls, **overrides: object) -> "IngestConfig":
        """``SETTLE_INGEST_<FIELD>`` variables, then CLI overrides (None = unset); SettingError (a ValueError)
        naming the variable of a value that does not parse or is out of range."""
        return from_env(cls, "SETTLE_INGEST_", overrides)
