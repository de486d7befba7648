"""CLI commands that need a real broker answer with a clear error, not a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from settle.streams.cli import app
from settle.streams.kafka.topics import ensure_topics_sync

pytestmark = pytest.mark.broker


def test_train_without_any_model_says_what_to_do(settings) -> None:  # type: ignore[no-untyped-def]
    ensure_topics_sync(settings)
    result = CliRunner().invoke(app, ["train", "-b", settings.bootstrap, "--prefix", settings.topic_prefix,
                                      "--registry", str(settings.data_dir / "models")])
    assert "Traceback" not in result.stdout + result.stderr
    assert result.exit_code == 2 and "no published model and no bootstrap student" in result.stderr


def test_a_topic_that_is_not_there_is_one_error_line_and_is_not_created(settings) -> None:  # type: ignore[no-untyped-def]
    """`tail`/`replay` of a missing topic said '0 records' (exit 0) or raised LookupError, and tail's
    subscription had the broker auto-create the topic it was asked about."""
    import asyncio

    from settle.streams.kafka.io import broker_topics

    runner = CliRunner()
    common = ["-b", settings.bootstrap, "--prefix", settings.topic_prefix]
    result = runner.invoke(app, ["tail", "nosuchtopic", *common])
    assert result.exit_code == 2 and "unknown topic 'nosuchtopic'" in result.stderr
    result = runner.invoke(app, ["tail", "settled", *common])
    assert result.exit_code == 2 and f"topic '{settings.topic('settled')}' does not exist" in result.stderr
    result = runner.invoke(app, ["replay", "edits", "-o", settings.topic_prefix + "out.", "--no-progress", *common])
    assert result.exit_code == 2 and f"topic '{settings.topic('edits')}' does not exist" in result.stderr
    assert not {t for t in asyncio.run(broker_topics(settings)) if t.startswith(settings.topic_prefix)}
    ensure_topics_sync(settings)
    result = runner.invoke(app, ["tail", "settled", "--idle", "0.5", *common])
    assert result.exit_code == 0 and "0 record(s)" in result.stderr
    for r in (result,):
        assert "Traceback" not in r.stdout + r.stderr
