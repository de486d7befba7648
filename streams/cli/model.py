"""Commands that make, train and publish students."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from settle.streams.cli.common import (
    BootstrapOpt,
    PrefixOpt,
    app,
    err,
    fail,
    kafka_call,
    settings_from,
)


@app.command()
def student(
    out: Annotated[Path, typer.Option("--out", "-o", help="model directory to create")],
    shape: Annotated[str, typer.Option(help="tiny, small or qwen2.5-0.5b (random weights)")] = "tiny",
    seed: int = 0,
    max_files: Annotated[Optional[int], typer.Option(help="source files for the tokenizer")] = 200,
) -> None:
    """Make a student offline: own tokenizer, random weights, ONNX export with a KV cache."""
    from settle.trainer.student.build import SHAPES, make_model_dir

    if shape not in SHAPES:
        raise fail(f"--shape must be one of {', '.join(SHAPES)}")
    if out.exists() and any(out.iterdir()):
        raise fail(f"{out} exists and is not empty")
    make_model_dir(out, shape=shape, seed=seed, max_files=max_files)
    err.print(f"student written to {out}")


@app.command()
def bootstrap(
    cache: Annotated[Path, typer.Option(help="where bootstrap students are cached")] = Path("var/cache"),
    steps: Annotated[int, typer.Option(min=1)] = 300,
    shape: str = "small",
) -> None:
    """Train (or reuse) the first student on simulated sessions; prints only its directory on stdout.

    Progress goes to stderr, so `--model "$(settle bootstrap)"` works.
    """
    from settle.trainer.student.bootstrap import BootstrapRecipe, bootstrap_student

    with contextlib.redirect_stdout(sys.stderr):
        path = bootstrap_student(cache, BootstrapRecipe(shape=shape, steps=steps))
    print(path)


@app.command()
def publish(
    model: Annotated[Path, typer.Option("--model", help="exported student directory (model.onnx, tokenizer, hf/)")],
    registry: Annotated[Path, typer.Option(help="model versions live here (shared with scorers and trainer)")] = Path(
        "var/models"
    ),
    name: Annotated[str, typer.Option(help="model name on `models`")] = "student",
    bootstrap: BootstrapOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Publish a student as the next version (the first one on an empty registry); prints its directory.

    Scorers following `models` switch to it, and the next `settle train` fine-tunes from it.
    """
    from settle.streams.kafka.topics import ensure_topics_sync
    from settle.trainer.job import TrainConfig, publish_bootstrap

    s = settings_from(bootstrap=bootstrap, topic_prefix=prefix)
    if not (model / "model.onnx").is_file():
        raise fail(f"{model} is not an exported student (no model.onnx): make one with `settle bootstrap`")
    if not (model / "hf").is_dir():
        raise fail(f"{model} has no hf/ weights: the trainer could not fine-tune it")
    kafka_call(lambda: ensure_topics_sync(s), s)
    message = kafka_call(lambda: publish_bootstrap(s, TrainConfig(registry=registry, name=name), model), s)
    err.print(f"published {message.name} {message.version} on {s.topic('models')}", markup=False)
    print(message.location)


@app.command()
def train(
    registry: Annotated[Path, typer.Option(help="model versions live here")] = Path("var/models"),
    name: Annotated[str, typer.Option(help="model name on `models`")] = "student",
    bootstrap_dir: Annotated[
        Optional[Path], typer.Option("--bootstrap-model", help="start from this model when nothing is published")
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="fine-tuning steps per run")] = 60,
    checkpoint_every: Annotated[
        int, typer.Option(min=0, help="fine-tuning steps between checkpoints a killed run resumes from; 0 = end only")
    ] = 10,
    min_examples: Annotated[int, typer.Option(min=1)] = 8,
    every: Annotated[
        Optional[str], typer.Option(help="run on a fixed interval from the first run's start (30m, 2h)")
    ] = None,
    cron: Annotated[Optional[str], typer.Option(help="run on a cron schedule, UTC (\"*/30 * * * *\")")] = None,
    runs: Annotated[int, typer.Option(min=0, help="with --every/--cron: stop after this many runs; 0 = never")] = 0,
    metrics_port: Annotated[
        Optional[int], typer.Option(help="serve Prometheus metrics on this port; 0 = off [env SETTLE_METRICS_PORT]")
    ] = None,
    bootstrap: BootstrapOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """One trainer run on what arrived on `kept` since the last; or one per slot of --every / --cron.

    A run killed mid-way is resumed by the next one from its last fine-tuning checkpoint.
    """
    import logging

    from settle.streams.kafka import prometheus as metrics
    from settle.trainer.finetune.config import FinetuneConfig
    from settle.trainer.job import TrainConfig, train_once
    from settle.trainer.schedule import Schedule

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    s = settings_from(bootstrap=bootstrap, topic_prefix=prefix)
    if bootstrap_dir is not None and not (bootstrap_dir / "model.onnx").exists():
        raise fail(f"{bootstrap_dir} is not an exported student")
    if every is not None and cron is not None:
        raise fail("give --every or --cron, not both")
    try:
        schedule = Schedule.parse(every=every, cron=cron)
    except ValueError as exc:
        if every is not None:
            raise fail(f"--every must look like 30m, 2h, 45s, 1d or seconds, not {every!r}") from None
        raise fail(f"--cron: {exc}") from None
    from settle.streams.kafka.lag import serve_metrics

    serve_metrics(s, metrics_port)
    config = TrainConfig(
        registry=registry, name=name, bootstrap_dir=bootstrap_dir, min_examples=min_examples,
        finetune=FinetuneConfig(steps=steps, batch_size=8, warmup_steps=min(10, steps // 5),
                                checkpoint_every=checkpoint_every),
    )
    now = time.time()
    anchor = schedule.first(now) if schedule else now
    if schedule is not None:
        err.print(f"train: {schedule.describe()}; first run at {_utc(anchor)}", markup=False)
    done = 0
    slot = anchor
    while True:
        if slot > time.time():
            time.sleep(slot - time.time())
        started = time.time()
        if schedule is not None:
            err.print(f"train: run {done + 1} starts at {started:.3f} (slot {slot:.3f})", markup=False)
        try:
            report = kafka_call(lambda: train_once(s, config), s)
        except typer.Exit:  # already reported in one line (click's Exit is a RuntimeError too)
            metrics.TRAIN_RUNS.labels("failed").inc()
            raise
        except RuntimeError as exc:
            metrics.TRAIN_RUNS.labels("failed").inc()
            raise fail(str(exc)) from None
        metrics.observe_train_run(report, started, time.time())
        resumed = f" (resumed from step {report.resumed_from_step})" if report.resumed_from_step else ""
        version = f" {report.message.version}" if report.message is not None else ""
        err.print(f"train: {report.status}{version}{resumed}: {report.reason}", markup=False)
        done += 1
        if schedule is None or (runs and done >= runs):
            return
        slot = schedule.next_after(anchor, time.time())
        err.print(f"train: next run at {_utc(slot)}", markup=False)


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
