"""`settle replay`: backfills into topics under a new prefix, under a consumer group of their own."""

from __future__ import annotations

import asyncio
from datetime import datetime
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


def parse_time(value: str | None, flag: str) -> int | None:
    """Epoch milliseconds, or an ISO-8601 time (UTC when it names no zone)."""
    if value is None:
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"{flag} must be epoch ms or an ISO-8601 time, not {value!r}") from None
    if dt.tzinfo is None:
        from datetime import timezone

        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def parse_offsets(value: str | None, flag: str) -> dict[int, int] | None:
    """``0:120,1:98`` -> {0: 120, 1: 98}."""
    if value is None:
        return None
    out: dict[int, int] = {}
    try:
        for part in value.split(","):
            if part.strip():
                p, o = part.split(":")
                out[int(p)] = int(o)
    except ValueError:
        raise fail(f"{flag} must look like PARTITION:OFFSET[,PARTITION:OFFSET...], not {value!r}") from None
    if any(o < 0 or p < 0 for p, o in out.items()):
        raise fail(f"{flag}: partitions and offsets must be >= 0")
    return out


class _Bar:
    """Rich progress: position, lag, rate, ETA (lag and ETA from the broker's end offsets)."""

    def __init__(self, label: str, enabled: bool) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} records"),
            TextColumn("lag {task.fields[lag]:,}"),
            TextColumn("{task.fields[rate]:,.0f} rec/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            disable=not enabled,
        )
        self.task = self.progress.add_task(label, total=1, lag=0, rate=0.0)
        import time

        self._time = time.perf_counter
        self._t0 = self._time()

    def __enter__(self) -> "_Bar":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, done: int, total: int, lag: int) -> None:
        elapsed = max(self._time() - self._t0, 1e-9)
        self.progress.update(self.task, completed=done, total=total, lag=lag, rate=done / elapsed)


@app.command()
def replay(
    what: Annotated[str, typer.Argument(help="edits (re-settle) or settled (re-score with --model)")],
    output_prefix: Annotated[
        Optional[str], typer.Option("--output-prefix", "-o", help="prefix of the topics written [env SETTLE_OUTPUT_PREFIX]")
    ] = None,
    from_time: Annotated[Optional[str], typer.Option("--from", help="span start: record timestamp, epoch ms or ISO-8601")] = None,
    to_time: Annotated[Optional[str], typer.Option("--to", help="span end (exclusive): epoch ms or ISO-8601")] = None,
    from_offsets: Annotated[Optional[str], typer.Option(help="span start per partition: 0:120,1:98")] = None,
    to_offsets: Annotated[Optional[str], typer.Option(help="span end (exclusive) per partition: 0:500,1:470")] = None,
    warmup_ms: Annotated[Optional[int], typer.Option(min=0, help="edits read before the span to rebuild state; default: what the tracker remembers (ttl+quiescence+lateness+skew, or its buffer memory)")] = None,
    group: Annotated[Optional[str], typer.Option(help="consumer group (default <group-prefix>-replay-<what>)")] = None,
    idle: Annotated[float, typer.Option(help="an open span ends after this many seconds without records")] = 2.0,
    model: Annotated[Optional[Path], typer.Option(help="settled: the student directory to score with")] = None,
    version: Annotated[Optional[str], typer.Option(help="settled: a version published on `models` (or 'latest') instead of --model")] = None,
    name: Annotated[str, typer.Option(help="settled --version: the model name on `models`")] = "student",
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
    progress: Annotated[bool, typer.Option(help="show a progress bar (position, lag, rate, ETA)")] = True,
    bootstrap: BootstrapOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Backfill: re-settle a span of `edits`, or re-score `settled` with a chosen model, into a new prefix.

    Runs at full speed under its own consumer group (partitions assigned, no live group touched).
    A re-settle emits exactly the regions born in the span (boundary rule: settle.streams.settling.span).
    """
    from settle.streams.kafka.replay import Span, replay_edits, replay_settled

    if what not in ("edits", "settled"):
        raise fail(f"replay what? 'edits' or 'settled', not {what!r}")
    s = settings_from(bootstrap=bootstrap, topic_prefix=prefix, output_prefix=output_prefix)
    if not s.output_prefix or s.output_prefix == s.topic_prefix:
        raise fail("give --output-prefix: a replay writes under a new prefix, never the live topics")
    try:
        span = Span(
            from_offsets=parse_offsets(from_offsets, "--from-offsets"),
            to_offsets=parse_offsets(to_offsets, "--to-offsets"),
            from_ms=parse_time(from_time, "--from"),
            to_ms=parse_time(to_time, "--to"),
            warmup_ms=warmup_ms,
        )
    except ValueError as exc:
        raise fail(f"bad span: {exc}") from None
    from settle.streams.kafka.io import require_topics

    if what == "edits":
        kafka_call(lambda: asyncio.run(require_topics(s, "edits")), s)  # a missing source: one error line, at once
        with _Bar(f"re-settle {s.topic('edits')}", progress) as bar:
            report = kafka_call(lambda: asyncio.run(
                replay_edits(s, s.output_prefix, span, group_id=group, idle_s=idle, progress=bar)), s)
        err.print(
            f"read {report.records:,} records ({report.in_span:,} in the span) in {report.seconds:.2f} s "
            f"({report.rate:,.0f}/s); wrote {report.emitted.get('settled', 0)} settled, "
            f"{report.emitted.get('dead-letter', 0)} dead letters to {s.output_prefix}*; "
            f"{report.suppressed} born outside the span not written; {report.undecided} region(s) still open",
            markup=False,
        )
        for plan in report.plans:
            err.print(f"  partition {plan.partition}: warm-up from {plan.warm}, span [{plan.start}, "
                      f"{plan.end if plan.end is not None else 'end'})", markup=False)
        return
    if model is None and version is not None:
        from settle.streams.kafka.replay import published_location

        try:
            model = Path(kafka_call(lambda: asyncio.run(published_location(s, name, version)), s))
        except LookupError as exc:
            raise fail(str(exc)) from None
    if model is None:
        raise fail("replay settled needs --model DIR or --version V (the model version to score with)")
    kafka_call(lambda: asyncio.run(require_topics(s, "settled")), s)
    config = scoring_config(k, round_size, mode, solve_threshold, keep_min, keep_max, temperature, top_p,
                            top_k, max_new_tokens, seed, adaptive, policy)
    source = load_student(model)
    with _Bar(f"re-score {s.topic('settled')} with {source.model_version}", progress) as bar:
        report = kafka_call(lambda: asyncio.run(
            replay_settled(s, s.output_prefix, source, config, span, group_id=group, idle_s=idle, progress=bar)), s)
    err.print(
        f"read {report.records:,} settled records in {report.seconds:.2f} s; scored "
        f"{report.emitted.get('scored', 0)} with {source.model_name} {source.model_version} "
        f"({report.emitted.get('kept', 0)} kept, {report.duplicates} repeats skipped) into {s.output_prefix}*",
        markup=False,
    )
