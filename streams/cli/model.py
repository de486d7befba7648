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


def _parse_every(every: str) -> float:
    """'30m', '2h', '45s' or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if every[-1:] in units:
            value = float(every[:-1]) * units[every[-1]]
        else:
            value = float(every)
    except ValueError:
        raise fail(f"--every must look like 30m, 2h, 45s or seconds, not {every!r}") from None
    if value <= 0:
        raise fail("--every must be positive")
    return value


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
def train(
    registry: Annotated[Path, typer.Option(help="model versions live here")] = Path("var/models"),
    name: Annotated[str, typer.Option(help="model name on `models`")] = "student",
    bootstrap_dir: Annotated[
        Optional[Path], typer.Option("--bootstrap-model", help="start from this model when nothing is published")
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="fine-tuning steps per run")] = 60,
    min_examples: Annotated[int, typer.Option(min=1)] = 8,
    every: Annotated[Optional[str], typer.Option(help="loop: run again after this long (30m, 2h)")] = None,
    bootstrap: BootstrapOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """One trainer run on what arrived on `kept` since the last (or one every --every)."""
    from settle.trainer.finetune.config import FinetuneConfig
    from settle.trainer.job import TrainConfig, train_once

    s = settings_from(bootstrap=bootstrap, topic_prefix=prefix)
    if bootstrap_dir is not None and not (bootstrap_dir / "model.onnx").exists():
        raise fail(f"{bootstrap_dir} is not an exported student")
    interval = _parse_every(every) if every else None
    config = TrainConfig(
        registry=registry, name=name, bootstrap_dir=bootstrap_dir, min_examples=min_examples,
        finetune=FinetuneConfig(steps=steps, batch_size=8, warmup_steps=min(10, steps // 5)),
    )
    while True:
        try:
            report = kafka_call(lambda: train_once(s, config), s)
        except RuntimeError as exc:
            raise fail(str(exc)) from None
        err.print(f"train: {report.status}: {report.reason}", markup=False)
        if interval is None:
            return
        time.sleep(interval)
