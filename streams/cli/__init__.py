"""settle: mine settled edit-prediction training data from editor telemetry (see README.md)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from settle.streams.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
err = Console(stderr=True, soft_wrap=True)  # one error, one line: greppable

BootstrapOpt = Annotated[
    Optional[str], typer.Option("--bootstrap", "-b", help="Kafka bootstrap host:port [env SETTLE_BOOTSTRAP]")
]
PrefixOpt = Annotated[Optional[str], typer.Option(help="topic name prefix [env SETTLE_TOPIC_PREFIX]")]
PartitionsOpt = Annotated[Optional[int], typer.Option(min=1, help="partitions per topic [env SETTLE_PARTITIONS]")]


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def _settings(**overrides: object) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except (ValueError, TypeError) as exc:
        raise fail(f"bad SETTLE_* environment setting: {exc}") from None


def _existing_file(path: Path) -> Path:
    if str(path) != "-" and not path.is_file():
        raise fail(f"{path}: no such file")
    return path


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
def topics(bootstrap: BootstrapOpt = None, prefix: PrefixOpt = None, partitions: PartitionsOpt = None) -> None:
    """Create settle's topics (explicit partitions and configs)."""
    from settle.streams.kafka.topics import ensure_topics_sync

    s = _settings(bootstrap=bootstrap, topic_prefix=prefix, partitions=partitions)
    created = _kafka(lambda: ensure_topics_sync(s), s)
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
    metrics_port: Annotated[int, typer.Option(help="serve Prometheus metrics on this port; 0 = off")] = 0,
    loglevel: Annotated[str, typer.Option()] = "warning",
) -> None:
    """Run a settle worker: `edits` in, `settled` and `dead-letter` out."""
    from settle.streams.kafka.settle_agent import run_worker

    s = _settings(
        bootstrap=bootstrap,
        topic_prefix=prefix,
        partitions=partitions,
        tick_interval_s=tick_interval,
        quiescence_ms=quiescence_ms,
        lateness_ms=lateness_ms,
    )
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    sys.argv = [sys.argv[0]]  # faust's Worker parses argv of its own
    _kafka(lambda: run_worker(s, loglevel=loglevel), s)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write ('-' = stdout)")] = Path("-"),
    sessions: Annotated[int, typer.Option(min=1)] = 20,
    seed: int = 0,
    start: Annotated[str, typer.Option(help="'now', 'fixed', or epoch ms of the first event")] = "fixed",
    source_dir: Annotated[Optional[Path], typer.Option(help="source files to edit (default: stdlib)")] = None,
    final_tick: Annotated[bool, typer.Option(help="end with a tick that decides every region")] = True,
) -> None:
    """Write simulated editor telemetry as JSONL, made from real source files."""
    from settle.streams.simulate import SimulationConfig, write_jsonl
    from settle.streams.simulate import simulate as run_sim

    if source_dir is not None and not source_dir.is_dir():
        raise fail(f"{source_dir}: not a directory")
    kwargs: dict[str, object] = {"sessions": sessions, "seed": seed, "final_tick": final_tick}
    if source_dir is not None:
        kwargs["source_dir"] = source_dir
    if start == "now":
        kwargs["start_ms"] = int(time.time() * 1000)
    elif start != "fixed":
        try:
            kwargs["start_ms"] = int(start)
        except ValueError:
            raise fail(f"--start must be 'now', 'fixed' or an integer, not {start!r}") from None
    try:
        events = run_sim(SimulationConfig(**kwargs))  # type: ignore[arg-type]
    except (OSError, ValueError) as exc:
        raise fail(str(exc)) from None
    if str(out) == "-":
        n = write_jsonl(events, sys.stdout.buffer)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        n = write_jsonl(events, out)
    err.print(f"wrote {n} events")


@app.command()
def produce(
    file: Annotated[Path, typer.Argument(help="JSONL telemetry ('-' = stdin)")],
    bootstrap: BootstrapOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Send a JSONL file to `edits`, keyed by buffer (bad lines too: the worker dead-letters them)."""
    from settle.streams.kafka.io import produce_lines

    s = _settings(bootstrap=bootstrap, topic_prefix=prefix)
    _existing_file(file)
    lines = [line for _, line in _numbered_lines(file)]
    n = _kafka(lambda: asyncio.run(produce_lines(s, lines)), s)
    err.print(f"produced {n} records to {s.topic('edits')}")


@app.command("settle")
def settle_offline(
    file: Annotated[Path, typer.Argument(help="JSONL telemetry ('-' = stdin)")],
    flush: Annotated[bool, typer.Option(help="at end of input, decide regions still open")] = False,
    strict: Annotated[bool, typer.Option(help="stop at the first invalid line (exit 2)")] = False,
    quiescence_ms: Annotated[Optional[int], typer.Option(min=1)] = None,
    lateness_ms: Annotated[Optional[int], typer.Option(min=0)] = None,
) -> None:
    """Offline reference: run the same tracker over a file and print settled examples as JSONL."""
    from settle.schemas.codecs import encode

    from settle.streams.settling.reference import settle_records

    s = _settings(quiescence_ms=quiescence_ms, lateness_ms=lateness_ms)
    _existing_file(file)
    result = settle_records(_numbered_lines(file), s.tracker, flush=flush)
    if strict and result.invalid:
        lineno, _, message = result.invalid[0]
        raise fail(f"{file}:{lineno}: {message}")
    for lineno, _, message in result.invalid:
        err.print(f"{file}:{lineno}: {message}", markup=False)
    out = sys.stdout.buffer
    for example in result.examples:
        out.write(encode(example) + b"\n")
    out.flush()
    st = result.tracker.stats
    err.print(
        f"{len(result.examples)} settled, dropped {dict(st.dropped_by_reason)}, "
        f"{st.late_events} late, {len(result.invalid)} invalid line(s), "
        f"{result.tracker.open_regions()} still open",
        markup=False,
    )


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="logical topic: settled, dead-letter, edits, ...")],
    bootstrap: BootstrapOpt = None,
    prefix: PrefixOpt = None,
    idle: Annotated[float, typer.Option(help="stop after this many seconds without records")] = 5.0,
) -> None:
    """Print a topic's values from the beginning as JSON lines, until idle."""
    from settle.streams.kafka.io import read_topic

    s = _settings(bootstrap=bootstrap, topic_prefix=prefix)
    records = _kafka(lambda: asyncio.run(read_topic(s, topic, idle_s=idle)), s)
    for r in records:
        sys.stdout.buffer.write(r.value + b"\n")
    err.print(f"{len(records)} record(s) from {s.topic(topic)}")


@app.command()
def run(
    sessions: Annotated[int, typer.Option(min=1)] = 20,
    seed: int = 0,
    port: Annotated[int, typer.Option(help="embedded broker port (0 = any free)")] = 0,
    work_dir: Annotated[Path, typer.Option(help="where logs and outputs go")] = Path("var/run"),
) -> None:
    """The main job on an embedded default: broker, worker, simulated telemetry, report."""
    from settle.streams.cli.whole_loop import run_demo

    try:
        run_demo(sessions=sessions, seed=seed, port=port, work_dir=work_dir)
    except RuntimeError as exc:
        raise fail(str(exc), 1) from None


def _scoring_config(
    k: int, round_size: int, mode: str, solve_threshold: float, keep_min: float, keep_max: float,
    temperature: float, top_p: float, top_k: int, max_new_tokens: int, seed: int, adaptive: bool,
    policy_file: Path | None = None,
):  # type: ignore[no-untyped-def]
    import msgspec

    from settle.schemas.scored import BandPolicy

    from settle.streams.scoring.score import ScoringConfig

    try:
        if policy_file is not None:
            if not policy_file.is_file():
                raise ValueError(f"{policy_file}: no such file")
            policy = msgspec.json.decode(policy_file.read_bytes(), type=BandPolicy)
        elif mode == "median":
            policy = BandPolicy(mode="median", k=k, round_size=round_size, keep_min_median=keep_min, keep_max_median=keep_max)
        elif mode == "solve_rate":
            policy = BandPolicy(
                k=k, round_size=round_size, solve_threshold=solve_threshold,
                keep_min_solve_rate=keep_min, keep_max_solve_rate=keep_max,
            )
        else:
            raise ValueError(f"--mode must be solve_rate or median, not {mode!r}")
    except (ValueError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise fail(f"bad band policy: {exc}") from None
    if not 0 < top_p <= 1:
        raise fail("--top-p must be in (0, 1]")
    if top_k < 0:
        raise fail("--top-k must be >= 0 (0: the whole vocabulary)")
    return ScoringConfig(
        policy=policy, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
        seed=seed, adaptive=adaptive,
    )


K = Annotated[int, typer.Option(min=1, help="samples per example")]
PolicyOpt = Annotated[
    Optional[Path], typer.Option("--policy", help="band policy JSON (from `settle calibrate`); overrides the band flags")
]
Mode = Annotated[str, typer.Option(help="band mode: solve_rate or median")]
TopK = Annotated[int, typer.Option(help="tokens kept per step before top-p; 0 = the whole vocabulary")]


def _student(model: Path):  # type: ignore[no-untyped-def]
    from settle.streams.runtime.student import ModelDirError, OnnxStudent

    try:
        return OnnxStudent(model)
    except ModelDirError as exc:
        raise fail(str(exc)) from None


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
def score(
    file: Annotated[Path, typer.Argument(help="settled examples as JSONL ('-' = stdin)")],
    model: Annotated[Path, typer.Option(help="exported student directory")],
    k: K = 16,
    round_size: int = 4,
    mode: Mode = "solve_rate",
    solve_threshold: float = 0.34,
    keep_min: Annotated[float, typer.Option(help="lower edge of the kept band")] = 0.125,
    keep_max: Annotated[float, typer.Option(help="upper edge of the kept band")] = 0.75,
    temperature: float = 0.8,
    top_p: float = 0.95,
    top_k: TopK = 50,
    max_new_tokens: int = 128,
    seed: int = 0,
    adaptive: bool = True,
    batch: Annotated[int, typer.Option(min=1, help="examples sampled together")] = 16,
    kept_only: Annotated[bool, typer.Option(help="print only the kept examples")] = False,
    policy: PolicyOpt = None,
) -> None:
    """Offline scorer: sample the student, measure distances, print scored examples as JSONL."""

    from settle.schemas.codecs import encode

    from settle.streams.scoring.score import score_batch

    _existing_file(file)
    config = _scoring_config(k, round_size, mode, solve_threshold, keep_min, keep_max, temperature, top_p,
                             top_k, max_new_tokens, seed, adaptive, policy)
    source = _student(model)
    examples = _read_settled(file)
    counts: dict[str, int] = {}
    out = sys.stdout.buffer
    for i in range(0, len(examples), batch):
        for s in score_batch(examples[i : i + batch], source, config):
            counts[s.decision.decision] = counts.get(s.decision.decision, 0) + 1
            if not kept_only or s.decision.decision == "keep":
                out.write(encode(s) + b"\n")
    out.flush()
    err.print(f"{len(examples)} scored with {source.model_name} {source.model_version}: {counts}", markup=False)


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
    temperature: float = 0.8,
    top_p: float = 0.95,
    top_k: TopK = 50,
    max_new_tokens: int = 128,
    seed: int = 0,
    adaptive: bool = True,
    policy: PolicyOpt = None,
    metrics_port: Annotated[int, typer.Option(help="serve Prometheus metrics on this port; 0 = off")] = 0,
    loglevel: str = "warning",
) -> None:
    """Run a scoring worker: `settled` in, `scored` and `kept` out; hot-reloads published models."""
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    from settle.streams.kafka.score_agent import ModelHolder, run_scorer
    from settle.streams.runtime.student import OnnxStudent

    s = _settings(bootstrap=bootstrap, topic_prefix=prefix)
    config = _scoring_config(k, round_size, mode, solve_threshold, keep_min, keep_max, temperature, top_p,
                             top_k, max_new_tokens, seed, adaptive, policy)
    holder = ModelHolder(_student(model), name, OnnxStudent)
    sys.argv = [sys.argv[0]]
    _kafka(lambda: run_scorer(s, holder, config, loglevel=loglevel), s)


@app.command()
def calibrate(
    file: Annotated[Path, typer.Argument(help="settled examples as JSONL")],
    model: Annotated[Path, typer.Option(help="exported student directory")],
    out: Annotated[Path, typer.Option("--out", "-o", help="policy JSON to write")] = Path("policy.json"),
    k: K = 8,
    easy: Annotated[float, typer.Option(help="quantile below which examples are too easy")] = 0.25,
    hard: Annotated[float, typer.Option(help="quantile above which examples are too hard")] = 0.75,
    max_new_tokens: int = 128,
) -> None:
    """Fit a median-mode band to a student's own difficulty quantiles and write it as JSON."""
    import msgspec

    from settle.schemas.scored import BandPolicy

    from settle.streams.scoring.score import calibrate_band

    _existing_file(file)
    source = _student(model)
    examples = _read_settled(file)
    try:
        policy = calibrate_band(examples, source, BandPolicy(mode="median", k=k), easy, hard, max_new_tokens)
    except ValueError as exc:
        raise fail(str(exc)) from None
    out.write_bytes(msgspec.json.format(msgspec.json.encode(policy)) + b"\n")
    err.print(f"band [{policy.keep_min_median:.3g}, {policy.keep_max_median:.3g}] written to {out}", markup=False)


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
    """Train (or reuse) the first student on simulated sessions; prints its directory."""
    from settle.trainer.student.bootstrap import BootstrapRecipe, bootstrap_student

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
    from settle.trainer.finetune.loop import FinetuneConfig
    from settle.trainer.job import TrainConfig, train_once

    s = _settings(bootstrap=bootstrap, topic_prefix=prefix)
    if bootstrap_dir is not None and not (bootstrap_dir / "model.onnx").exists():
        raise fail(f"{bootstrap_dir} is not an exported student")
    interval = _parse_every(every) if every else None
    config = TrainConfig(
        registry=registry, name=name, bootstrap_dir=bootstrap_dir, min_examples=min_examples,
        finetune=FinetuneConfig(steps=steps, batch_size=8, warmup_steps=min(10, steps // 5)),
    )
    while True:
        try:
            report = _kafka(lambda: train_once(s, config), s)
        except RuntimeError as exc:
            raise fail(str(exc)) from None
        err.print(f"train: {report.status}: {report.reason}", markup=False)
        if interval is None:
            return
        time.sleep(interval)


def _read_settled(file: Path) -> list:  # type: ignore[type-arg]
    """Settled examples of a JSONL file; a bad line is reported with its number and skipped."""
    import msgspec

    from settle.schemas.codecs import decode_settled

    examples = []
    for lineno, raw in _numbered_lines(file):
        try:
            examples.append(decode_settled(raw))
        except msgspec.DecodeError as exc:
            err.print(f"{file}:{lineno}: not a settled example: {exc}", markup=False)
    return examples


def _numbered_lines(file: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) for every non-blank line, numbered as in the file."""
    stream = sys.stdin.buffer if str(file) == "-" else open(file, "rb")
    with stream:
        for lineno, line in enumerate(stream, 1):
            line = line.strip()
            if line:
                yield lineno, line


def _kafka(fn, s: Settings):  # type: ignore[no-untyped-def]
    """Run fn, turning 'broker unreachable' into a one-line error instead of a traceback."""
    import logging

    from aiokafka.errors import KafkaConnectionError, KafkaError

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the one-line error below says it
    try:
        return fn()
    except KafkaConnectionError:
        raise fail(f"cannot reach a Kafka broker at {s.bootstrap} (start one with `settle broker`)") from None
    except KafkaError as exc:
        raise fail(f"Kafka error talking to {s.bootstrap}: {exc}") from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
