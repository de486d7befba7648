"""Every numeric setting is checked against its range, and a bad one names its environment variable."""

from __future__ import annotations

import typing
from dataclasses import fields
from pathlib import Path

import pytest

from settle.streams.ingest.config import IngestConfig
from settle.streams.local.processes import settings_env
from settle.streams.settings import SettingError, Settings


def _numeric(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in fields(cls):
        hint = hints[f.name]
        base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
        if base in (int, float):
            out.append(f.name)
    return out


NUMERIC = [(Settings, "SETTLE_", n) for n in _numeric(Settings)] + [
    (IngestConfig, "SETTLE_INGEST_", n) for n in _numeric(IngestConfig)]


def test_the_numeric_settings_are_all_found() -> None:
    names = {n for _, _, n in NUMERIC}
    assert {"partitions", "max_per_session", "max_per_repository", "metrics_port", "tick_interval_s",
            "max_values", "rate_per_s", "port"} <= names
    assert len(NUMERIC) >= 28


@pytest.mark.parametrize(("cls", "prefix", "name"), NUMERIC)
def test_a_number_out_of_range_or_unreadable_names_its_variable(
    cls: type, prefix: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    var = f"{prefix}{name.upper()}"
    for bad, says in (("-1000000000", "must be"), ("lots", "not a"), ("nan", "")):
        monkeypatch.setenv(var, bad)
        if bad == "nan" and typing.get_type_hints(cls)[name] is int:
            continue
        with pytest.raises(SettingError) as info:
            cls.from_env()
        assert str(info.value).startswith(f"{var}=") and says in str(info.value), info.value
    monkeypatch.delenv(var)
    cls.from_env()  # the defaults are in range


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SETTLE_MAX_PER_SESSION": "-1"}, "SETTLE_MAX_PER_SESSION=-1: must be >= 0"),
        ({"SETTLE_PARTITIONS": "0"}, "SETTLE_PARTITIONS=0: must be >= 1"),
        ({"SETTLE_BOUNDARY": "weird"}, "SETTLE_BOUNDARY='weird': expected one of absorb, exclusive"),
        ({"SETTLE_RECORD_TIME": "maybe"}, "SETTLE_RECORD_TIME='maybe': not a boolean"),
        ({"SETTLE_TICK_INTERVAL_S": "inf"}, "SETTLE_TICK_INTERVAL_S=inf: expected a finite number"),
        ({"SETTLE_HEARTBEAT_INTERVAL_S": "9"}, "must be below SETTLE_SESSION_TIMEOUT_S"),
        ({"SETTLE_DEAD_LETTER_RETENTION_MS": "-2"}, "must be >= -1"),
    ],
)
def test_messages(env: dict[str, str], says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingError, match=None) as info:
        Settings.from_env()
    assert says in str(info.value)


def test_settings_made_in_code_are_checked_too() -> None:
    with pytest.raises(SettingError, match="SETTLE_MAX_PER_REPOSITORY=-5"):
        Settings(max_per_repository=-5)
    with pytest.raises(SettingError, match="SETTLE_INGEST_MAX_VALUES=0"):
        IngestConfig(max_values=0)
    assert Settings(dead_letter_retention_ms=-1, max_per_session=0).max_per_session == 0  # documented values


def test_a_child_process_environment_reads_back_equal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = Settings(partitions=3, record_time=True, tick_interval_s=0.5, data_dir=tmp_path, boundary="exclusive")
    for k, v in settings_env(s).items():
        monkeypatch.setenv(k, v)
    assert Settings.from_env() == s
