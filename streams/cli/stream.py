"""Commands that run or feed the Kafka side: topics, workers, scorers, produce, tail."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from settle.schemas.jsonl import read_lines
from settle.streams.cli.common import (
    BootstrapOpt,
    PartitionsOpt,
    PrefixOpt,
    app,
    err,
    existing_file,
    fail,
    kafka_call,
    settings_from,
)
from settle.streams.cli.sampling_options import (
    DEFAULTS,
    K,
    MaxNewTokens,
    Mode,
    PolicyOpt,
    Seed,
    Temperature,
    TopK,
    TopP,
    load_student,
    scoring_config,
)


@app.command()
def topics(bootstrap: BootstrapOpt = None, prefix: PrefixOpt = None, partitions: PartitionsOpt = None) -> None:
    """Create settle's topics (explicit partitions and configs)."""
    from settle.streams.kafka.topics import ensure_topics_sync

    s = settings_from(bootstrap=bootstrap, topic_prefix=prefix, partitions=partitions)
    created = kafka_call(lambda: ensure_topics_sync(s), s)
    err.print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")


@app.command()
def worker(
    bootstrap: BootstrapOpt = None,
    prefix: PrefixOpt = None,
    partitions: PartitionsOpt = None,
    tick_interval: Annotated[
        Optional[float], typer.Option(help="seconds between wall-clock ticks (live mode); 0 = off")
    ] = None,
    quiescence_ms: Annotated[Optional[int], typer.Option(min=1)] = None,
    lateness_ms: Annotated[Optional[int], typer.Option(min=0)] = None,
    metrics_port: Annotated[
        Optional[int], typer.Option(help="serve Prometheus metrics on this port; 0 = off [env SETTLE_METRICS_PORT]")
    ] = None,
    loglevel: Annotated[str, typer.Option()] = "warning",
) -> None:
    """Run a settle worker: `edits` in, `settled` and `dead-letter` out."""
    from settle.streams.kafka.settle_agent import run_worker

    s = settings_from(
        bootstrap=bootstrap,
        topic_prefix=prefix,
        partitions=partitions,
        tick_interval_s=tick_interval,
        quiescence_ms=quiescence_ms,
        lateness_ms=lateness_ms,
    )
    from settle.streams.kafka.lag import serve_metrics

    serve_metrics(s, metrics_port, group_id=f"{s.group_prefix}-settle", topic="edits")
    sys.argv = [sys.argv[0]]  # faust's Worker parses argv of its own
    kafka_call(lambda: run_worker(s, loglevel=loglevel), s)


@app.command()
def scorer(
    model: Annotated[Path, typer.Option(help="student to start with (a newer published one on `models` wins)")],
    name: Annotated[str, typer.Option(help="model name to follow on `models`")] = "student",
    bootstrap: BootstrapOpt = None,
    prefix: PrefixOpt = None,
    k: K = 16,
    round_size: int = 4,
    mode: Mode = "solve_rate",
    solve_threshold: float = 0.34,
    keep_min: float = 0.125,
    keep_max: float = 0.75,
    temperature: Temperature = DEFAULTS.temperature,
    top_p: TopP = DEFAULTS.top_p,
    top_k: TopK = DEFAULTS.top_k,
    max_new_tokens: MaxNewTokens = DEFAULTS.max_new_tokens,
    seed: Seed = DEFAULTS.seed,
    adaptive: bool = True,
    policy: PolicyOpt = None,
    metrics_port: Annotated[
        Optional[int], typer.Option(help="serve Prometheus metrics on this port; 0 = off [env SETTLE_METRICS_PORT]")
    ] = None,
    loglevel: str = "warning",
) -> None:
    """Run a scoring worker: `settled` in, `scored` and `kept` out; hot-reloads published models."""
    from settle.streams.kafka.score_agent import ModelHolder, run_scorer
    from settle.streams.runtime.student import OnnxStudent

    s = settings_from(bootstrap=bootstrap, topic_prefix=prefix)
    config = scoring_config(k, round_size, mode, solve_threshold, keep_min, keep_max, temperature, top_p,
                             top_k, max_new_tokens, seed, adaptive, policy)
    from settle.streams.kafka.lag import serve_metrics

    serve_metrics(s, metrics_port, group_id=f"{s.group_prefix}-score", topic="settled")
    holder = ModelHolder(load_student(model), name, OnnxStudent)
    sys.argv = [sys.argv[0]]
    kafka_call(lambda: run_scorer(s, holder, config, loglevel=loglevel), s)


@app.command()
def produce(
    file: Annotated[Path, typer.Argument(help="JSONL telemetry ('-' = stdin)")],
    bootstrap: BootstrapOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Send a JSONL file to `edits`, keyed by buffer (bad lines too: the worker dead-letters them)."""
    from settle.streams.kafka.io import produce_lines

    s = settings_from(bootstrap=bootstrap, topic_prefix=prefix)
    existing_file(file)
    lines = [line for _, line in read_lines(file)]
    n = kafka_call(lambda: asyncio.run(produce_lines(s, lines)), s)
    err.print(f"produced {n} records to {s.topic('edits')}")


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="logical topic: settled, dead-letter, edits, ...")],
    bootstrap: BootstrapOpt = None,
    prefix: PrefixOpt = None,
    idle: Annotated[float, typer.Option(help="stop after this many seconds without records")] = 5.0,
) -> None:
    """Print a topic's values from the beginning as JSON lines, until idle."""
    from settle.streams.kafka.io import read_topic, require_topics
    from settle.streams.settings import ALL_TOPICS

    if topic not in ALL_TOPICS:
        raise fail(f"unknown topic {topic!r}: one of {', '.join(ALL_TOPICS)} (the prefix comes from --prefix)")
    s = settings_from(bootstrap=bootstrap, topic_prefix=prefix)

    async def read() -> list:
        await require_topics(s, topic)  # never subscribe to a missing topic: the broker would create it
        return await read_topic(s, topic, idle_s=idle)

    records = kafka_call(lambda: asyncio.run(read()), s)
    for r in records:
        sys.stdout.buffer.write(r.value + b"\n")
    err.print(f"{len(records)} record(s) from {s.topic(topic)}")
