"""Settings of the ingest endpoint: ``SETTLE_INGEST_<NAME>`` variables, then CLI overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from settle.streams.ingest.limits import parse_tokens


@dataclass(frozen=True)
class IngestConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    #: ``client:token`` pairs, comma- or newline-separated (SETTLE_INGEST_TOKENS)
    tokens: str = ""
    #: a file of ``client:token`` lines, read at start (SETTLE_INGEST_TOKENS_FILE)
    tokens_file: str = ""
    #: largest body on the wire (compressed), bytes
    max_body_bytes: int = 8 * 1024 * 1024
    #: largest body once decompressed, bytes (a decompression bomb stops here)
    max_decoded_bytes: int = 32 * 1024 * 1024
    #: most values in one post
    max_values: int = 20_000
    #: events (or reports) per second per client; 0 = unlimited
    rate_per_s: float = 20_000.0
    #: largest burst per client
    burst: float = 40_000.0
    #: seconds to wait for the broker to acknowledge a post's records before answering 503
    ack_timeout_s: float = 10.0
    #: answers remembered for retried posts with an Idempotency-Key (all clients together)
    idempotency_keys: int = 100_000
    #: prediction requests waiting for their Zed settled report: at most this many ...
    join_max_entries: int = 100_000
    #: ... and none older than this
    join_max_age_s: float = 900.0

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
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get(f"SETTLE_INGEST_{f.name.upper()}")
            if raw is not None:
                values[f.name] = int(raw) if f.type == "int" else float(raw) if f.type == "float" else raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)
