"""Commands for one machine: the embedded broker, and the whole loop on it (`settle run`)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from settle.streams.cli.common import (
    app,
    err,
    fail,
)


@app.command()
def broker(
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 9092,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, in memory) until interrupted."""
    from settle.streams.local.broker import BrokerError, EmbeddedBroker

    b = EmbeddedBroker(port=port, host=host)
    try:
        b.start()
    except BrokerError as exc:
        raise fail(str(exc)) from None
    err.print(f"broker ready at [bold]{b.bootstrap}[/] (Ctrl-C to stop)")
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop and b.running:
            time.sleep(0.2)
    finally:
        b.stop()
    if not stop:
        raise fail("broker exited unexpectedly", 1)
    err.print("broker stopped")


@app.command()
def run(
    sessions: Annotated[int, typer.Option(min=1)] = 20,
    seed: int = 0,
    port: Annotated[int, typer.Option(help="embedded broker port (0 = any free)")] = 0,
    work_dir: Annotated[Path, typer.Option(help="where logs and outputs go")] = Path("var/run"),
    calibrate: Annotated[bool, typer.Option(
        help="fit the band to the student's own difficulty quantiles first (with the shipped student the default "
             "band keeps nothing, so without it the trainer has nothing to train on)")] = True,
) -> None:
    """The main job on an embedded default: broker, worker, simulated telemetry, trainer, report."""
    from settle.streams.cli.whole_loop import run_whole_loop

    try:
        run_whole_loop(sessions=sessions, seed=seed, port=port, work_dir=work_dir, calibrate=calibrate)
    except typer.Exit:
        raise
    except RuntimeError as exc:
        raise fail(str(exc), 1) from None
