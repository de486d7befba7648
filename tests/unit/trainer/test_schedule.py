"""The trainer's schedule: a fixed grid from the first run's start, or cron slots, never a burst."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from settle.trainer.schedule import Schedule, parse_duration


def _t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_durations() -> None:
    assert [parse_duration(x) for x in ("30m", "2h", "45s", "1d", "90", "1.5m")] == [1800, 7200, 45, 86400, 90, 90]
    for bad in ("", "0", "-5m", "30 minutes", "m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_an_interval_keeps_the_grid_of_the_first_start_whatever_each_run_took() -> None:
    every = Schedule.parse(every="30m")
    anchor = _t("2026-11-29T10:07:13")
    assert every.first(anchor) == anchor
    # a 5-minute run: the next one starts 30 min after the previous *start*, not after its end
    assert every.next_after(anchor, anchor + 300) == anchor + 1800
    assert every.next_after(anchor, anchor + 1800 + 420) == anchor + 3600
    # a run that overran two slots skips them (no burst of late runs) and stays on the grid
    assert every.next_after(anchor, anchor + 2 * 1800 + 5) == anchor + 3 * 1800
    # a run that ended exactly on a slot waits for the next one
    assert every.next_after(anchor, anchor + 1800) == anchor + 3600


def test_cron_slots_in_utc() -> None:
    cron = Schedule.parse(cron="*/30 * * * *")
    assert cron.first(_t("2026-11-29T10:07:13")) == _t("2026-11-29T10:30:00")
    assert cron.next_after(0, _t("2026-11-29T10:30:00")) == _t("2026-11-29T11:00:00")
    assert cron.next_after(0, _t("2026-11-29T11:59:59")) == _t("2026-11-29T12:00:00")
    nightly = Schedule.parse(cron="15 3 * * *")
    assert nightly.next_after(0, _t("2026-11-29T03:15:01")) == _t("2026-11-30T03:15:00")


def test_bad_schedules_are_refused() -> None:
    assert Schedule.parse() is None
    with pytest.raises(ValueError, match="not both"):
        Schedule.parse(every="30m", cron="* * * * *")
    with pytest.raises(ValueError, match="cron"):
        Schedule.parse(cron="every half hour")
