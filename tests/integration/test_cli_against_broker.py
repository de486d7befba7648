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
