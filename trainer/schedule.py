"""When the next trainer run starts: a fixed interval from the start of runs, or a cron expression.

Pure (no sleeping, no clock reads): the caller passes times in, so the schedule is tested exactly.
A run that overruns its slot skips the slots it missed instead of starting a burst of late runs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'30m', '2h', '45s', '1d' or plain seconds; ValueError otherwise."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration (30m, 2h, 45s, 1d or seconds): {text!r}")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return seconds


@dataclass(frozen=True)
class Schedule:
    """Either ``every`` seconds counted from ``anchor`` (the first run's start), or a cron expression (UTC)."""

    every_s: float | None = None
    cron: str | None = None

    def __post_init__(self) -> None:
        if (self.every_s is None) == (self.cron is None):
            raise ValueError("a schedule is either an interval or a cron expression")
        if self.cron is not None:
            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ValueError(f"not a cron expression: {self.cron!r}")

    @classmethod
    def parse(cls, every: str | None = None, cron: str | None = None) -> "Schedule | None":
        """From the CLI's --every / --cron (None when neither: run once)."""
        if every is not None and cron is not None:
            raise ValueError("give --every or --cron, not both")
        if every is not None:
            return cls(every_s=parse_duration(every))
        if cron is not None:
            return cls(cron=cron)
        return None

    def first(self, now: float) -> float:
        """When the first run starts: now for an interval, the next matching minute for cron."""
        return now if self.every_s is not None else self._cron_after(now)

    def next_after(self, anchor: float, now: float) -> float:
        """The first slot strictly after ``now``; interval slots are ``anchor + k * every``."""
        if self.every_s is not None:
            k = math.floor((now - anchor) / self.every_s) + 1
            return anchor + max(k, 1) * self.every_s
        return self._cron_after(now)

    def _cron_after(self, now: float) -> float:
        from croniter import croniter

        start = datetime.fromtimestamp(now, tz=timezone.utc)
        return float(croniter(self.cron, start).get_next(float))

    def describe(self) -> str:
        return f"every {self.every_s:g} s from the first run's start" if self.every_s is not None else f"cron {self.cron!r} (UTC)"
