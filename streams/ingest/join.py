"""The bounded join of Zed's settled reports with the prediction requests they answer.

A client that settles regions itself (Zed) sends its prediction request's input
and, 10+ seconds later, a settled report naming the same request id. The
request waits here, bounded in count and in age, until its report takes it;
what never meets its partner is counted, never kept forever.
Pure: the caller passes the clock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from settle.schemas.events import PredictionRequested


@dataclass
class JoinStats:
    remembered: int = 0
    #: a report found its request
    matched: int = 0
    #: a report came and its request was not (or no longer) here
    unmatched_reports: int = 0
    #: requests pushed out by the size bound before any report came
    evicted: int = 0
    #: requests that aged out before any report came
    expired: int = 0
    #: a request id seen again while its first request still waited (the first is kept)
    duplicates: int = 0


@dataclass
class RequestJoin:
    """Requests by id, oldest first; at most ``max_entries`` of them, none older than ``max_age_ms``."""

    max_entries: int = 100_000
    max_age_ms: int = 15 * 60 * 1000
    stats: JoinStats = field(default_factory=JoinStats)
    _waiting: OrderedDict[str, tuple[int, PredictionRequested]] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._waiting)

    def remember(self, request: PredictionRequested, now_ms: int) -> bool:
        """Keep ``request`` for its report; False (and counted) if its id already waits."""
        self._expire(now_ms)
        if request.request_id in self._waiting:
            self.stats.duplicates += 1
            return False
        self._waiting[request.request_id] = (now_ms, request)
        self.stats.remembered += 1
        while len(self._waiting) > self.max_entries:
            self._waiting.popitem(last=False)
            self.stats.evicted += 1
        return True

    def take(self, request_id: str, now_ms: int) -> PredictionRequested | None:
        """The request a report answers, removed from the join; None (counted) if absent."""
        self._expire(now_ms)
        entry = self._waiting.pop(request_id, None)
        if entry is None:
            self.stats.unmatched_reports += 1
            return None
        self.stats.matched += 1
        return entry[1]

    def put_back(self, request: PredictionRequested, now_ms: int) -> None:
        """Undo a ``take`` whose report could not be delivered, so a retried post still joins."""
        self._waiting.setdefault(request.request_id, (now_ms, request))
        self.stats.matched -= 1

    def _expire(self, now_ms: int) -> None:
        horizon = now_ms - self.max_age_ms
        while self._waiting:
            arrived, _ = next(iter(self._waiting.values()))
            if arrived >= horizon:
                break
            self._waiting.popitem(last=False)
            self.stats.expired += 1
