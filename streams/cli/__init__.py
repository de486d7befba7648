"""settle: mine settled edit-prediction training data from editor telemetry (see README.md).

The composition root: the only place that imports both the streams and the trainer.
Each module registers one group of commands on the shared Typer app.
"""

from __future__ import annotations

import os

# Quiet, honest output: no weight-loading bars from transformers and the hub (progress that matters is ours).
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from rich.markup import escape

from settle.streams.cli import ingest, local, model, offline, replay, status, stream, zed  # noqa: F401  (registers the commands)
from settle.streams.cli.common import app, err

__all__ = ["app", "main"]


def main() -> None:
    """The `settle` command. What a command did not turn into its own one-line error (a path that is a
    directory, a port in use, a setting out of range) still ends as one ``error:`` line and exit code 2,
    not a traceback; ``SETTLE_DEBUG=1`` shows the traceback instead."""
    try:
        app()
    except (OSError, ValueError, OverflowError) as exc:
        if os.environ.get("SETTLE_DEBUG"):
            raise
        err.print(f"[bold red]error:[/] {escape(str(exc) or type(exc).__name__)}")
        raise SystemExit(2) from None
