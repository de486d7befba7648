"""Commands on files, no broker: simulate telemetry, the offline reference, score, calibrate."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from settle.schemas.jsonl import read_lines
from settle.streams.cli.common import (
    app,
    err,
    existing_file,
    fail,
    read_settled,
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
    student_or_default,
)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write ('-' = stdout)")] = Path("-"),
    sessions: Annotated[int, typer.Option(min=1)] = 20,
    seed: int = 0,
    start: Annotated[str, typer.Option(help="'now', 'fixed', or epoch ms of the first event")] = "fixed",
    source_dir: Annotated[Optional[Path], typer.Option(help="source files to edit (default: stdlib)")] = None,
    final_tick: Annotated[bool, typer.Option(help="end with a tick that decides every region")] = True,
    git: Annotated[Optional[Path], typer.Option(help="sessions from this repository's history instead")] = None,
    rev: Annotated[Optional[str], typer.Option(help="--git: revision range for git rev-list (default HEAD)")] = None,
    max_commits: Annotated[int, typer.Option(min=1, help="--git: at most this many commits")] = 30,
    noise_rate: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="per typing burst, the chance of a labelled noise episode (0.2 = the benches' rate)",
    )] = 0.0,
    noise_labels: Annotated[Optional[Path], typer.Option(
        help="also write the noise labels here (JSON: request id -> class); they never travel on the wire",
    )] = None,
) -> None:
    """Write simulated editor telemetry as JSONL, made from real source files (or a repository's history)."""
    from settle.schemas.jsonl import write_records
    from settle.streams.simulate import SimulationConfig, generate

    if source_dir is not None and not source_dir.is_dir():
        raise fail(f"{source_dir}: not a directory")
    kwargs: dict[str, object] = {"sessions": sessions, "seed": seed, "final_tick": final_tick, "noise_rate": noise_rate}
    if source_dir is not None:
        kwargs["source_dir"] = source_dir
    if start == "now":
        kwargs["start_ms"] = int(time.time() * 1000)
    elif start != "fixed":
        try:
            kwargs["start_ms"] = int(start)
        except ValueError:
            raise fail(f"--start must be 'now', 'fixed' or an integer, not {start!r}") from None
    if git is not None:
        from settle.streams.cli.git_sim import simulate_git

        if rev is not None and rev.startswith("-"):  # never an option smuggled into git
            raise fail(f"--rev must be a revision or range, not an option: {rev!r}")
        if noise_rate or noise_labels is not None:
            raise fail("--noise-rate and --noise-labels apply to simulated sessions, not to --git history")
        return simulate_git(git, rev, max_commits, seed, kwargs.get("start_ms"), out)  # type: ignore[arg-type]
    try:
        sim = generate(SimulationConfig(**kwargs))  # type: ignore[arg-type]
    except (OSError, ValueError) as exc:
        raise fail(str(exc)) from None
    if str(out) != "-":
        out.parent.mkdir(parents=True, exist_ok=True)
    n = write_records(sim.events, out)
    if noise_labels is not None:
        noise_labels.parent.mkdir(parents=True, exist_ok=True)
        noise_labels.write_text(json.dumps(sim.noise, indent=0, sort_keys=True) + "\n")
    err.print(f"wrote {n} events" + (f", {len(sim.noise)} labelled noise requests" if noise_rate else ""))


@app.command("reference")
def reference(
    file: Annotated[Path, typer.Argument(help="JSONL telemetry ('-' = stdin)")],
    flush: Annotated[bool, typer.Option(help="at end of input, decide regions still open")] = False,
    strict: Annotated[bool, typer.Option(help="stop at the first invalid line (exit 2)")] = False,
    quiescence_ms: Annotated[Optional[int], typer.Option(min=1)] = None,
    lateness_ms: Annotated[Optional[int], typer.Option(min=0)] = None,
) -> None:
    """Offline reference: run the same tracker over a file and print settled examples as JSONL."""
    from settle.schemas.codecs import encode
    from settle.streams.settling.reference import settle_records

    s = settings_from(quiescence_ms=quiescence_ms, lateness_ms=lateness_ms)
    existing_file(file)
    result = settle_records(read_lines(file), s.tracker, flush=flush, safety=s.safety)
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
        f"{result.tracker.open_regions()} still open; safety dropped {dict(result.safety.dropped)}, "
        f"scrubbed {dict(result.safety.scrubbed)}",
        markup=False,
    )


@app.command()
def score(
    file: Annotated[Path, typer.Argument(help="settled examples as JSONL ('-' = stdin)")],
    model: Annotated[
        Optional[Path], typer.Option(help="exported student directory (default: the bootstrap student)")
    ] = None,
    k: K = 16,
    round_size: int = 4,
    mode: Mode = "solve_rate",
    solve_threshold: float = 0.34,
    keep_min: Annotated[float, typer.Option(help="lower edge of the kept band")] = 0.125,
    keep_max: Annotated[float, typer.Option(help="upper edge of the kept band")] = 0.75,
    temperature: Temperature = DEFAULTS.temperature,
    top_p: TopP = DEFAULTS.top_p,
    top_k: TopK = DEFAULTS.top_k,
    max_new_tokens: MaxNewTokens = DEFAULTS.max_new_tokens,
    seed: Seed = DEFAULTS.seed,
    adaptive: bool = True,
    batch: Annotated[int, typer.Option(min=1, help="examples sampled together")] = 16,
    kept_only: Annotated[bool, typer.Option(help="print only the kept examples")] = False,
    policy: PolicyOpt = None,
) -> None:
    """Offline scorer: sample the student, measure distances, print scored examples as JSONL."""

    from settle.schemas.codecs import encode
    from settle.streams.scoring.score import score_batch

    existing_file(file)
    config = scoring_config(k, round_size, mode, solve_threshold, keep_min, keep_max, temperature, top_p,
                             top_k, max_new_tokens, seed, adaptive, policy)
    source = load_student(student_or_default(model, "scoring"))
    examples = read_settled(file)
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
def calibrate(
    file: Annotated[Path, typer.Argument(help="settled examples as JSONL")],
    model: Annotated[
        Optional[Path], typer.Option(help="exported student directory (default: the bootstrap student, as `score`)")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="policy JSON to write")] = Path("policy.json"),
    k: K = 8,
    easy: Annotated[float, typer.Option(help="quantile below which examples are too easy")] = 0.25,
    hard: Annotated[float, typer.Option(help="quantile above which examples are too hard")] = 0.75,
    max_new_tokens: MaxNewTokens = DEFAULTS.max_new_tokens,
) -> None:
    """Fit a median-mode band to a student's own difficulty quantiles and write it as JSON."""
    import msgspec

    from settle.schemas.scored import BandPolicy
    from settle.streams.scoring.score import calibrate_band

    existing_file(file)
    source = load_student(student_or_default(model, "calibrating"))
    examples = read_settled(file)
    try:
        policy = calibrate_band(examples, source, BandPolicy(mode="median", k=k), easy, hard, max_new_tokens)
    except ValueError as exc:
        raise fail(str(exc)) from None
    out.write_bytes(msgspec.json.format(msgspec.json.encode(policy)) + b"\n")
    err.print(f"band [{policy.keep_min_median:.3g}, {policy.keep_max_median:.3g}] written to {out}", markup=False)
