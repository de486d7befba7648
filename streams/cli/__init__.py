"""settle: mine settled edit-prediction training data from editor telemetry (see README.md).

The composition root: the only place that imports both the streams and the trainer.
Each module registers one group of commands on the shared Typer app.
"""

from __future__ import annotations

import os

# Quiet, honest output: no weight-loading bars from transformers and the hub (progress that matters is ours).
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from settle.streams.cli import ingest, local, model, offline, replay, status, stream, zed  # noqa: F401  (registers the commands)
from settle.streams.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
