"""`settle run`: the whole loop on one machine, with nothing installed but this package.

Embedded broker, a settle worker, a scoring worker and a trainer run, fed with
simulated telemetry: settled examples arrive (and are checked against the
offline reference), the student scores them, the kept band trains a
candidate, the candidate is evaluated and published or refused, and the
scorer hot-reloads it for the next batch. A short report ends it.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import msgspec
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from settle.schemas.codecs import decode, decode_event, decode_settled, encode
from settle.schemas.examples import SettledExample
from settle.schemas.scored import BandPolicy, ScoredExample
from settle.streams.kafka.io import produce_lines, read_topic
from settle.streams.kafka.topics import ensure_topics_sync
from settle.streams.local.broker import EmbeddedBroker
from settle.streams.local.processes import WorkerProcess
from settle.streams.settings import DEAD_LETTER, SCORED, SETTLED, Settings
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, continue_after, simulate

MAX_NEW_TOKENS = 96


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _telemetry(seed: int, sessions: int, after: list[bytes] | None = None) -> list[bytes]:
    """JSONL lines of simulated sessions; ``after`` = continue in event time after those lines."""
    config = SimulationConfig(sessions=sessions, seed=seed)
    if after:
        config = replace(config, start_ms=continue_after([decode_event(line) for line in after]))
    return [encode(e) for e in simulate(config)]


def run_whole_loop(
    sessions: int, seed: int, port: int, work_dir: Path, timeout_s: float = 600.0, calibrate: bool = False
) -> None:
    """The loop with the default band (``BandPolicy()``); ``calibrate`` fits a median band to the
    bootstrap student's own difficulty quantiles instead (what the loop did while the bootstrap
    student could not beat "not editing")."""
    from settle.streams.runtime.student import OnnxStudent
    from settle.streams.scoring.score import calibrate_band
    from settle.trainer.job import TrainConfig, publish_bootstrap, train_once
    from settle.trainer.student.bootstrap import bootstrap_student

    console = Console()
    work_dir.mkdir(parents=True, exist_ok=True)
    registry = work_dir / "models"
    shutil.rmtree(registry, ignore_errors=True)

    with console.status("bootstrap student (shipped artifact, else trained: cached after the first run)"):
        student = bootstrap_student(Path("var/cache"))
    console.print(f"bootstrap student: {student}")

    if calibrate:
        calibration = settle_records(enumerate(_telemetry(seed=77, sessions=8))).examples
        with console.status("calibrating the band to the student's own difficulty quantiles"):
            policy = calibrate_band(calibration, OnnxStudent(student), BandPolicy(mode="median", k=8), 0.25, 0.75,
                                    MAX_NEW_TOKENS)
        console.print(
            f"band (median normalised distance) calibrated on {len(calibration)} examples: "
            f"keep [{policy.keep_min_median:.2f}, {policy.keep_max_median:.2f}]"
        )
    else:
        policy = BandPolicy()
        console.print(
            f"band: the default policy, not calibrated: keep when {policy.keep_min_solve_rate:g}..."
            f"{policy.keep_max_solve_rate:g} of k={policy.k} samples are within {policy.solve_threshold:g} "
            "of the user's edit size"
        )
    policy_file = work_dir / "policy.json"
    policy_file.write_bytes(msgspec.json.encode(policy))

    first = _telemetry(seed, sessions)
    second = _telemetry(seed + 1, max(2, sessions // 2), after=first)
    reference = {e.id: e for e in settle_records(enumerate(first)).examples}
    second_ids = {e.id for e in settle_records(enumerate(first + second)).examples} - set(reference)

    # A SIGTERM (a supervisor, `timeout`) unwinds like Ctrl-C, so the broker, worker and scorer stop too.
    signal.signal(signal.SIGTERM, _terminate)
    with EmbeddedBroker(port=port, log_path=work_dir / "broker.log") as broker:
        settings = Settings.from_env(bootstrap=broker.bootstrap, data_dir=work_dir / "worker")
        ensure_topics_sync(settings)
        config = TrainConfig(registry=registry, bootstrap_dir=student, min_examples=4, max_new_tokens=MAX_NEW_TOKENS)
        publish_bootstrap(settings, config, student)
        console.print(f"embedded broker at {broker.bootstrap}; starting a settle worker and a scorer")
        settle = WorkerProcess(settings, work_dir / "settle.log").start()
        scorer = WorkerProcess(
            settings, work_dir / "scorer.log", command="scorer",
            extra_args=("--model", str(student), "--policy", str(policy_file), "--max-new-tokens", str(MAX_NEW_TOKENS)),
        ).start()
        try:
            asyncio.run(produce_lines(settings, first))
            scored = _watch(settings, set(reference), [settle, scorer], timeout_s, "scored (model v0001)")
            records = asyncio.run(read_topic(settings, SETTLED, idle_s=1.0))
            settled = {e.id: e for e in (decode_settled(r.value) for r in records)}
            with console.status("trainer: fine-tune on `kept`, export, evaluate against v0001"):
                report = train_once(settings, config, progress=False)
            current = "v0001"
            if report.status == "published":
                current = report.message.version  # type: ignore[union-attr]
                _wait_for_reload(scorer, current, timeout_s=120)
            # A rejected candidate changes nothing: the second batch is scored by v0001 then.
            asyncio.run(produce_lines(settings, second))
            scored = _watch(settings, set(reference) | second_ids, [settle, scorer], timeout_s,
                            f"second batch scored (model {current})")
            dead = asyncio.run(read_topic(settings, DEAD_LETTER, idle_s=1.0))
        finally:
            scorer.stop()
            settle.stop()

    _report(console, reference, settled, scored, report, len(dead), work_dir, policy.k)


def _scored(settings: Settings) -> dict[str, ScoredExample]:
    return {s.id: s for s in (decode(r.value, ScoredExample) for r in asyncio.run(read_topic(settings, SCORED, idle_s=1.0)))}


def _watch(settings: Settings, want: set[str], workers: list[WorkerProcess], timeout_s: float, label: str) -> dict:
    deadline = time.monotonic() + timeout_s
    got: dict[str, ScoredExample] = {}
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task(label, total=len(want))
        while not want <= set(got):
            for w in workers:
                if not w.alive:
                    raise RuntimeError(f"a worker exited:\n{w.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out with {len(want & set(got))}/{len(want)} scored")
            got = _scored(settings)
            progress.update(task, completed=len(want & set(got)))
    return got


def _wait_for_reload(scorer: WorkerProcess, version: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while f"now uses student {version}" not in scorer.log_tail(400):
        if time.monotonic() > deadline or not scorer.alive:
            raise RuntimeError(f"scorer did not load {version}:\n{scorer.log_tail()}")
        time.sleep(0.5)


def _report(console: Console, reference: dict[str, SettledExample], settled: dict, scored: dict, report,  # type: ignore[no-untyped-def]
            dead: int, work_dir: Path, band_k: int) -> None:
    same = set(settled) >= set(reference) and all(settled[i] == reference[i] for i in reference)
    console.print(
        f"`settled`: {len(settled)} examples; the first batch equals the offline reference: "
        f"[bold]{'yes' if same else 'NO'}[/]; dead letters: {dead}"
    )
    table = Table(title="scorer decisions by model version")
    kinds = ("too_easy", "keep", "too_hard", "unchanged", "invalid")
    table.add_column("model")
    for k in kinds:
        table.add_column(k, justify="right")
    table.add_column("mean samples", justify="right")
    by_version: dict[str, list[ScoredExample]] = {}
    for s in scored.values():
        by_version.setdefault(s.model_version, []).append(s)
    for version, rows in sorted(by_version.items()):
        counts = Counter(s.decision.decision for s in rows)
        sampled = [s.decision.samples_used for s in rows if s.decision.samples_used]
        mean = f"{sum(sampled) / len(sampled):.1f}/{band_k}" if sampled else "-"
        table.add_row(version, *(str(counts.get(k, 0)) for k in kinds), mean)
    console.print(table)

    if report.message is None:
        console.print(f"trainer: {report.status} ({report.reason})")
    else:
        m = report.message
        t = Table(title=f"trainer: {m.version} {m.status} (parent {m.parent_version or '-'}), "
                        f"{m.train_examples} train / {m.eval_examples} held-out examples")
        t.add_column("held-out metric")
        t.add_column(m.version, justify="right")
        t.add_column(m.parent_version or "parent", justify="right")
        for key in ("delta_chrf", "reversal_ratio", "exact_match_rate", "parse_rate"):
            t.add_row(key, f"{m.metrics.get(key, float('nan')):.3f}", f"{m.parent_metrics.get(key, float('nan')):.3f}")
        console.print(t)
        console.print(f"gate: {m.reason}")
    console.print(f"logs, telemetry and model versions in {work_dir}")
    if not same:
        raise RuntimeError("settled topic differs from the offline reference")
