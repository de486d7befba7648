"""`settle replay` answers bad input with one error line (no broker needed), and parses spans."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from settle.streams.cli import app
from settle.streams.cli.replay import parse_offsets, parse_time

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stderr


def test_span_parsing() -> None:
    assert parse_offsets("0:120, 1:98,", "--from-offsets") == {0: 120, 1: 98}
    assert parse_offsets(None, "x") is None
    assert parse_time("1767225600000", "--from") == 1_767_225_600_000
    assert parse_time("2026-01-01T00:00:00Z", "--from") == 1_767_225_600_000
    assert parse_time("2026-01-01 00:00:00", "--from") == 1_767_225_600_000  # UTC when no zone
    for bad in ("0-1", "a:b", "0:-1"):
        with pytest.raises(typer.Exit):
            parse_offsets(bad, "--to-offsets")
    with pytest.raises(typer.Exit):
        parse_time("yesterday", "--to")


def test_errors_are_one_line() -> None:
    code, err = _run("replay", "edits", "--bootstrap", "127.0.0.1:1")
    assert code == 2 and "--output-prefix" in err
    code, err = _run("replay", "edits", "--prefix", "a.", "-o", "a.", "--bootstrap", "127.0.0.1:1")
    assert code == 2 and "new prefix" in err
    code, err = _run("replay", "scored", "-o", "b.", "--bootstrap", "127.0.0.1:1")
    assert code == 2 and "'edits' or 'settled'" in err
    code, err = _run("replay", "settled", "-o", "b.", "--bootstrap", "127.0.0.1:1")
    assert code == 2 and "--model" in err
    code, err = _run("replay", "edits", "-o", "b.", "--bootstrap", "127.0.0.1:1", "--no-progress")
    assert code == 2 and "cannot reach a Kafka broker" in err
