"""Per-client token buckets and bearer tokens for the ingest endpoint. Pure: the caller passes the clock."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``rate`` events per second, bursts up to ``burst``; one bucket per client."""

    rate: float
    burst: float
    _level: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, client: str, cost: float, now_s: float) -> float:
        """Spend ``cost`` of ``client``'s budget: 0.0 if allowed, else the seconds until it would be.

        A cost above the burst can never be paid at once: it is refused with the time
        a full bucket takes to refill, so the client splits its batch.
        """
        if self.rate <= 0:
            return 0.0
        level, last = self._level.get(client, (self.burst, now_s))
        level = min(self.burst, level + (now_s - last) * self.rate)
        if cost <= level:
            self._level[client] = (level - cost, now_s)
            return 0.0
        self._level[client] = (level, now_s)
        return (min(cost, self.burst) - level) / self.rate if cost <= self.burst else self.burst / self.rate


def parse_tokens(spec: str) -> dict[str, str]:
    """``client:token,client2:token2`` (commas or newlines) as {token: client}; ValueError when malformed."""
    tokens: dict[str, str] = {}
    entries = [p.strip() for p in spec.replace("\n", ",").split(",")]
    for n, part in enumerate((p for p in entries if p and not p.startswith("#")), 1):
        client, sep, token = part.partition(":")
        client, token = client.strip(), token.strip()
        if not sep or not client or not token:  # the entry itself may be a bare secret: never echo it
            raise ValueError(f"token entry {n}: expected CLIENT:TOKEN")
        if token in tokens:
            raise ValueError(f"clients {tokens[token]!r} and {client!r} share a token")
        tokens[token] = client
    return tokens


def client_of(authorization: str | None, tokens: Mapping[str, str]) -> str | None:
    """The client a ``Bearer`` header authenticates, or None. Compares every token in constant time."""
    if not authorization:
        return None
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None
    presented_b = presented.strip().encode()
    found = None
    for token, client in tokens.items():
        if hmac.compare_digest(presented_b, token.encode()):
            found = client
    return found
