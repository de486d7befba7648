"""Crash campaign: SIGKILL settle workers and scorers at random moments, then compare with the offline reference.

Two settle workers and two scorers run in their consumer groups (so every kill
and restart moves partitions) while simulated telemetry is produced to `edits`
at a steady rate. At random moments a random worker of either kind is killed
with SIGKILL (no shutdown, no final commit) and restarted after a short random
delay. At the end `settled`, `scored` and `kept` are read from the beginning
and compared, id by id, with the offline reference: ``settle_records`` over the
same lines, and ``score_batch`` with the same student and scoring settings
(batch-invariant on CPU, so a record's bytes do not depend on its batch).

Repeats of an id with identical content are the promised at-least-once
behaviour (a restarted worker re-reads from its last safe commit); an id lost,
an id invented, or one id with two different contents is a defect, and makes
the exit status 1 (2: the campaign itself could not run to its end).

    python bench/chaos.py                        # 100k events, 20 kills
    python bench/chaos.py --events 3000 --kills 3 --rate 300
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from settle.schemas.codecs import decode, decode_settled, encode
from settle.schemas.scored import ScoredExample
from settle.streams.cli.sampling_options import DEFAULTS, scoring_config
from settle.streams.kafka.io import key_of
from settle.streams.kafka.security import client_kwargs
from settle.streams.kafka.topics import ensure_topics_sync
from settle.streams.local.broker import EmbeddedBroker
from settle.streams.local.processes import WorkerProcess
from settle.streams.scoring.score import ScoringConfig, score_batch
from settle.streams.settings import DEAD_LETTER, EDITS, KEPT, SCORED, SETTLED, Settings
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate

OUTPUTS = (SETTLED, SCORED, KEPT)
console = Console(width=None if sys.stdout.isatty() else 160)  # a log gets the whole table, not 80 columns


# --------------------------------------------------------------------------- input and reference


def simulated_lines(events: int, seed: int, tick_ms: int) -> tuple[list[bytes], int]:
    """At least ``events`` lines of whole simulated sessions (each ends decided by the final tick)."""
    sessions = max(1, events // 150)
    while True:
        config = SimulationConfig(sessions=sessions, seed=seed, tick_interval_ms=tick_ms)
        lines = [encode(e) for e in simulate(config)]
        if len(lines) >= events:
            return lines, sessions
        sessions = max(sessions + 1, math.ceil(sessions * events / max(1, len(lines)) * 1.02))


@dataclass(frozen=True)
class Scoring:
    """The scorer's settings, once as CLI flags (for `settle scorer`) and once as the config they make."""

    k: int
    max_new_tokens: int
    keep_min: float
    keep_max: float

    @property
    def flags(self) -> tuple[str, ...]:
        return ("--k", str(self.k), "--round-size", str(self.k), "--mode", "solve_rate",
                "--keep-min", str(self.keep_min), "--keep-max", str(self.keep_max),
                "--max-new-tokens", str(self.max_new_tokens))

    @property
    def config(self) -> ScoringConfig:
        # the very function `settle scorer` builds its config with, on the same values
        return scoring_config(self.k, self.k, "solve_rate", 0.34, self.keep_min, self.keep_max,  # type: ignore[no-any-return]
                              DEFAULTS.temperature, DEFAULTS.top_p, DEFAULTS.top_k, self.max_new_tokens,
                              DEFAULTS.seed, True)


def references(lines: list[bytes], settings: Settings, student: Path, scoring: Scoring) -> dict[str, dict[str, bytes]]:
    """Expected records by id on each output topic: the offline settle and score of the same lines."""
    from settle.streams.runtime.student import OnnxStudent

    settled = settle_records(enumerate(lines), settings.tracker, safety=settings.safety).examples
    source = OnnxStudent(student)
    scored: list[ScoredExample] = []
    for i in range(0, len(settled), 16):
        scored += score_batch(settled[i : i + 16], source, scoring.config)
    return {
        SETTLED: {e.id: encode(e) for e in settled},
        SCORED: {s.id: encode(s) for s in scored},
        KEPT: {s.id: encode(s) for s in scored if s.decision.decision == "keep"},
    }


# --------------------------------------------------------------------------- the running system


@dataclass
class Worker:
    """One logical worker (a settle worker or a scorer) and its successive processes."""

    name: str
    kind: str  # "settle" or "score"
    settings: Settings
    logs: Path
    command: str = "worker"
    extra_args: tuple[str, ...] = ()
    proc: WorkerProcess | None = None
    started_at: float = 0.0
    starts: int = 0
    #: exits nobody caused (a crash of its own): each is restarted too, and reported
    unplanned_exits: int = 0

    def start(self) -> None:
        self.starts += 1
        log = self.logs / f"{self.name}.{self.starts}.log"  # one log per process, kept
        self.proc = WorkerProcess(self.settings, log, self.command, self.extra_args).start()
        self.started_at = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()


@dataclass
class Produced:
    lines: int = 0
    error: str = ""


async def produce_steady(settings: Settings, lines: Sequence[bytes], rate: float, state: Produced) -> None:
    """Send the lines to `edits` at ``rate`` lines/s, keyed by buffer, ticks to every partition
    (as ``produce_lines`` does), with one producer for the whole run."""
    name = settings.topic(EDITS)
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all", linger_ms=5)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(name))
        started = time.monotonic()
        pending = []
        for i, raw in enumerate(lines):
            ahead = started + i / rate - time.monotonic()
            if ahead > 0:
                if pending:
                    await asyncio.gather(*pending)
                    pending.clear()
                await asyncio.sleep(ahead)
            key, is_tick = key_of(raw)
            for p in partitions if is_tick else [None]:
                pending.append(await producer.send(name, value=raw, key=key, partition=p))
            state.lines = i + 1
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


@dataclass
class Collected:
    """Every record read so far from the output topics, by logical topic."""

    values: dict[str, list[bytes]] = field(default_factory=lambda: {t: [] for t in (*OUTPUTS, DEAD_LETTER)})
    ids: dict[str, set[str]] = field(default_factory=lambda: {t: set() for t in OUTPUTS})
    last_record_at: float = field(default_factory=time.monotonic)
    error: str = ""


def _id_of(topic: str, value: bytes) -> str:
    try:
        return decode_settled(value).id if topic == SETTLED else decode(value, ScoredExample).id
    except msgspec.DecodeError:
        return f"<undecodable:{value[:40]!r}>"


async def collect(settings: Settings, into: Collected, stop: threading.Event) -> None:
    """Read the output topics from the beginning for as long as the campaign runs.

    One consumer without a group: no commits, no rebalances of its own. Done is
    decided from what arrived, never from end offsets (unreliable on this broker, NOTES.md).
    """
    names = {settings.output_topic(t): t for t in (*OUTPUTS, DEAD_LETTER)}
    consumer = AIOKafkaConsumer(*names, **client_kwargs(settings), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=300, max_records=5000)
            for tp, msgs in batches.items():
                topic = names[tp.topic]
                for m in msgs:
                    value = m.value or b""
                    into.values[topic].append(value)
                    if topic in into.ids:
                        into.ids[topic].add(_id_of(topic, value))
                    into.last_record_at = time.monotonic()
    finally:
        await consumer.stop()


def in_thread(name: str, make: Callable[[], object], on_error: Callable[[str], None]) -> threading.Thread:
    def run() -> None:
        try:
            asyncio.run(make())  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001  (reported, and the campaign stops on it)
            on_error(f"{type(exc).__name__}: {exc}")

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t


# --------------------------------------------------------------------------- figures


@dataclass
class Figures:
    expected: int
    records: int  # before dedupe on id
    unique: int  # after dedupe on id
    lost: list[str]
    invented: list[str]
    #: ids with a record whose content differs from the reference, or from another copy
    different: list[str]

    @property
    def duplicates(self) -> int:
        return self.records - self.unique


def compare(topic: str, values: list[bytes], reference: dict[str, bytes]) -> Figures:
    """Id by id against the reference; content is compared decoded (field values, not key order)."""
    kind = ScoredExample if topic != SETTLED else None
    by_id: dict[str, set[bytes]] = {}
    for v in values:
        by_id.setdefault(_id_of(topic, v), set()).add(v)

    def same(a: bytes, b: bytes) -> bool:
        if a == b:
            return True
        try:
            return (decode_settled(a) == decode_settled(b)) if kind is None else (decode(a, kind) == decode(b, kind))
        except msgspec.DecodeError:
            return False

    different = sorted(i for i, vs in by_id.items() if i in reference and any(not same(v, reference[i]) for v in vs))
    return Figures(
        expected=len(reference), records=len(values), unique=len(by_id),
        lost=sorted(set(reference) - set(by_id)), invented=sorted(set(by_id) - set(reference)), different=different,
    )


def write_defects(work: Path, topic: str, fig: Figures, values: list[bytes], reference: dict[str, bytes]) -> Path:
    """Every copy of each defective id beside its reference, as JSONL, for investigation."""
    path = work / f"defects-{topic}.jsonl"
    wanted = set(fig.different) | set(fig.invented)
    with open(path, "wb") as out:
        out.writelines(msgspec.json.encode({"id": i, "defect": "lost", "reference": reference[i].decode()}) + b"\n"
                       for i in fig.lost)
        for v in values:
            i = _id_of(topic, v)
            if i in wanted:
                ref = reference.get(i)
                out.write(msgspec.json.encode({"id": i, "defect": "different" if ref else "invented",
                                               "got": v.decode(errors="replace"),
                                               "reference": ref.decode() if ref else None}) + b"\n")
    return path


def partition_report(settings: Settings, lost: set[str], reference: dict[str, bytes]) -> list[str]:
    """Per `edits` partition: records on it, the settle group's committed offset, settled ids lost.

    Read while the broker still runs; tells a partition nobody consumed to its end from one
    consumed but whose outputs went missing.
    """
    from aiokafka.partitioner import DefaultPartitioner

    from settle.schemas.events import buffer_key
    from settle.streams.kafka.io import committed_offsets, read_topic

    committed = asyncio.run(committed_offsets(settings, f"{settings.group_prefix}-settle"))
    records = Counter(r.partition for r in asyncio.run(read_topic(settings, EDITS, idle_s=3.0, max_s=300)))
    parts = list(range(settings.partitions))
    lost_in: dict[int, list[str]] = {}
    for i in sorted(lost):
        e = decode_settled(reference[i])
        lost_in.setdefault(DefaultPartitioner()(buffer_key(e.session_id, e.path).encode(), parts, parts), []).append(i)
    return [f"edits partition {p}: {records[p]:,} records, settle group committed {committed.get(p, '-')}, "
            f"settled ids lost {len(lost_in.get(p, []))} {lost_in.get(p, [])[:3]}" for p in parts]


def log_counts(logs: Path, needle: str) -> dict[str, int]:
    """Worker processes whose log holds ``needle``, with how many times."""
    counts = {p.stem: p.read_text(errors="replace").count(needle) for p in sorted(logs.glob("*.log"))}
    return {name: n for name, n in counts.items() if n}


# --------------------------------------------------------------------------- the campaign


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000, help="simulated events at least (whole sessions)")
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs, each of a random worker of either kind")
    ap.add_argument("--seed", type=int, default=0, help="simulation and kill schedule")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rate", type=float, default=500.0, help="events produced per second (steady)")
    ap.add_argument("--tick-ms", type=int, default=5_000, help="a tick every this many ms of event time")
    ap.add_argument("--warmup-s", type=float, default=10.0, help="no kill before this many s of producing")
    ap.add_argument("--min-uptime-s", type=float, default=4.0, help="prefer victims up at least this long")
    ap.add_argument("--restart-min-s", type=float, default=0.5)
    ap.add_argument("--restart-max-s", type=float, default=3.0)
    ap.add_argument("--idle-timeout-s", type=float, default=180.0,
                    help="give up waiting when no output record arrived for this long (what is missing then is lost)")
    ap.add_argument("--grace-s", type=float, default=5.0, help="once all expected ids arrived, wait this long quiet")
    ap.add_argument("--k", type=int, default=2, help="student samples per example (kept small: cheap scoring)")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--keep-min", type=float, default=0.0, help="kept band (solve rate); the tiny random student "
                    "solves nothing, so the default band [0, 1] keeps every sampled example")
    ap.add_argument("--keep-max", type=float, default=1.0)
    ap.add_argument("--model", type=Path, help="student directory (default: a tiny random ONNX student built here)")
    ap.add_argument("--storage", default="memory", choices=["memory", "s3"], help="the broker's storage engine")
    ap.add_argument("--worker-loglevel", default="info", help="workers' and scorers' log level: at info Faust logs "
                    "each rebalance step and, while a rebalance waits for unacked records, where each agent is")
    ap.add_argument("--workdir", type=Path, help="logs and defect files (default: a temporary directory, kept)")
    args = ap.parse_args()
    if args.kills < 0 or args.events < 1 or args.rate <= 0 or args.restart_max_s < args.restart_min_s:
        ap.error("need --kills >= 0, --events >= 1, --rate > 0, --restart-max-s >= --restart-min-s")

    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows in a log as it happens
    wall0 = time.monotonic()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="settle-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    rng = random.Random(args.seed)
    scoring = Scoring(args.k, args.max_new_tokens, args.keep_min, args.keep_max)

    lines, sessions = simulated_lines(args.events, args.seed, args.tick_ms)
    # Caps count per worker and restart at zero after a crash (a bound, not a quota): off here.
    base = Settings(partitions=args.partitions, max_per_session=0, max_per_repository=0,
                    topic_prefix="chaos.", group_prefix="chaos")
    student = args.model
    if student is None:
        from settle.trainer.student.build import make_model_dir

        student = make_model_dir(work / "student" / "v0", shape="tiny", max_files=20)
    t0 = time.monotonic()
    ref = references(lines, base, student, scoring)
    console.print(f"{len(lines):,} events from {sessions} simulated sessions (seed {args.seed}); reference: "
                  f"{len(ref[SETTLED]):,} settled, {len(ref[SCORED]):,} scored, {len(ref[KEPT]):,} kept "
                  f"({time.monotonic() - t0:.1f} s); work dir {work}")

    s3 = None
    env: dict[str, str] = {}
    storage = "memory://tansu/"
    if args.storage == "s3":
        from settle.streams.local.s3 import LocalS3

        s3 = LocalS3().start()
        storage, env = s3.storage_engine, s3.broker_env
    broker = EmbeddedBroker(log_path=work / "broker.log", storage_engine=storage, env=env).start()
    workers: list[Worker] = []
    stop = threading.Event()
    produced, collected = Produced(), Collected()
    kills: list[tuple[float, str]] = []
    where: list[str] = []
    threads: list[threading.Thread] = []
    try:
        settings = replace(base, bootstrap=broker.bootstrap)
        ensure_topics_sync(settings)
        for i in (1, 2):
            level = ("--loglevel", args.worker_loglevel)
            workers.append(Worker(f"settle-{i}", "settle", replace(settings, data_dir=work / f"settle-{i}"),
                                  work / "logs", extra_args=level))
            workers.append(Worker(f"score-{i}", "score", replace(settings, data_dir=work / f"score-{i}"),
                                  work / "logs", command="scorer",
                                  extra_args=("--model", str(student), *scoring.flags, *level)))
        for w in workers:
            w.start()

        def producer_failed(message: str) -> None:
            produced.error = message

        def collector_failed(message: str) -> None:
            collected.error = message

        threads += [
            in_thread("collect", lambda: collect(settings, collected, stop), collector_failed),
            in_thread("produce", lambda: produce_steady(settings, lines, args.rate, produced), producer_failed),
        ]
        campaign0 = time.monotonic()
        produce_s = len(lines) / args.rate
        window = (args.warmup_s, max(produce_s, args.warmup_s + 1.0))
        schedule = sorted(rng.uniform(*window) for _ in range(args.kills))
        restarts: list[tuple[float, Worker]] = []

        def tend() -> None:
            """Restart the killed whose delay is up; restart (and count) any that died on its own."""
            now = time.monotonic()
            for at, w in list(restarts):
                if now >= at:
                    restarts.remove((at, w))
                    w.start()
            for w in workers:
                if not w.alive and all(w is not r for _, r in restarts):
                    w.unplanned_exits += 1
                    console.print(f"[red]{w.name} exited by itself[/red] (log {w.proc.log_path if w.proc else '-'})")
                    w.start()

        while schedule or restarts or produced.lines < len(lines):
            if produced.error or collected.error:
                console.print(f"[red]campaign aborted[/red]: producer {produced.error!r}, collector {collected.error!r}")
                return 2
            now = time.monotonic() - campaign0
            if schedule and now >= schedule[0]:
                up = [w for w in workers if w.alive and time.monotonic() - w.started_at >= args.min_uptime_s]
                victims = up or [w for w in workers if w.alive]
                if victims:
                    schedule.pop(0)
                    victim = rng.choice(victims)
                    victim.kill()
                    kills.append((now, victim.name))
                    delay = rng.uniform(args.restart_min_s, args.restart_max_s)
                    restarts.append((time.monotonic() + delay, victim))
                    console.print(f"{now:7.1f} s  kill {len(kills):2d}: {victim.name} (up {time.monotonic() - victim.started_at:.1f} s), "
                                  f"restart in {delay:.1f} s; produced {produced.lines:,}/{len(lines):,}")
            tend()
            time.sleep(0.1)
        console.print(f"{time.monotonic() - campaign0:7.1f} s  all {len(lines):,} events produced, "
                      f"{len(kills)} kills done; waiting for the outputs")

        # Done = every expected id arrived on every output, then a quiet grace period;
        # or nothing new for idle_timeout_s (what is missing then counts as lost).
        while True:
            tend()
            if collected.error:
                console.print(f"[red]campaign aborted[/red]: collector {collected.error!r}")
                return 2
            quiet = time.monotonic() - collected.last_record_at
            complete = all(set(ref[t]) <= collected.ids[t] for t in OUTPUTS)
            if (complete and quiet >= args.grace_s) or quiet >= args.idle_timeout_s:
                break
            time.sleep(0.5)
        drained_s = time.monotonic() - campaign0
        if not all(set(ref[t]) <= collected.ids[t] for t in OUTPUTS):
            where = partition_report(settings, set(ref[SETTLED]) - collected.ids[SETTLED], ref[SETTLED])
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        for w in workers:
            if w.proc is not None:
                w.proc.stop()
        broker.stop()
        if s3 is not None:
            s3.stop()

    figures = {t: compare(t, collected.values[t], ref[t]) for t in OUTPUTS}
    by_kind = Counter(next(w.kind for w in workers if w.name == name) for _, name in kills)
    table = Table(title=f"chaos: {len(lines):,} events at {args.rate:g}/s, {len(kills)} SIGKILLs "
                        f"({by_kind['settle']} settle workers, {by_kind['score']} scorers), "
                        f"{args.partitions} partitions, seed {args.seed}")
    for col in ("topic", "expected", "records (before dedupe)", "unique ids (after dedupe)", "duplicates",
                "lost", "invented", "different content"):
        table.add_column(col, justify="left" if col == "topic" else "right")
    for t, f in figures.items():
        bad = "[bold red]" if f.lost or f.invented or f.different else ""
        table.add_row(t, f"{f.expected:,}", f"{f.records:,}", f"{f.unique:,}", f"{f.duplicates:,}",
                      f"{bad}{len(f.lost)}", f"{bad}{len(f.invented)}", f"{bad}{len(f.different)}")
    console.print(table)
    unplanned = sum(w.unplanned_exits for w in workers)
    console.print(f"kills: {len(kills)} ({dict(by_kind)}); restarts: {sum(w.starts - 1 for w in workers)}; "
                  f"exits nobody caused: {unplanned}; dead letters: {len(collected.values[DEAD_LETTER])}")
    console.print(f"campaign {drained_s:.1f} s (producing {produce_s:.0f} s at {args.rate:g} events/s, outputs "
                  f"complete {drained_s - produce_s:.1f} s after the last event was due); wall {time.monotonic() - wall0:.1f} s; "
                  f"load average {tuple(round(x, 2) for x in os.getloadavg())}; logs in {work / 'logs'}")
    # A rebalance waiting for records the agent has not acked (a stalled partition), and an agent
    # that crashed inside a live process (Faust restarts it; the process never exits).
    for needle, what in (("wait_empty", "Faust waited for unacked records in a rebalance (wait_empty)"),
                         ("Crashed reason=", "an agent crashed (Faust restarted it in the same process)")):
        found = log_counts(work / "logs", needle)
        if found:
            console.print(f"[yellow]{what}[/yellow] in {len(found)} process(es): "
                          + ", ".join(f"{n} ({c}x)" for n, c in sorted(found.items())))
    defective = {t: f for t, f in figures.items() if f.lost or f.invented or f.different}
    for line in where:
        console.print(line)
    if defective:
        # an id missing downstream but present upstream was lost by that stage's worker
        scorer_lost = set(figures[SCORED].lost) - set(figures[SETTLED].lost)
        kept_lost = set(figures[KEPT].lost) - set(figures[SCORED].lost)
        console.print(f"lost by the settle workers: {len(figures[SETTLED].lost)}; by the scorers: {len(scorer_lost)} "
                      f"on scored, {len(kept_lost)} more on kept")
    for t, f in defective.items():
        path = write_defects(work, t, f, collected.values[t], ref[t])
        console.print(f"[red]{t}[/red]: lost {f.lost[:5]}, invented {f.invented[:5]}, different {f.different[:5]} "
                      f"(all copies beside the reference in {path})")
    console.print("targets (0 lost, 0 invented, 0 different content): " + ("[red]MISSED[/red]" if defective else "met"))
    return 1 if defective else 0


if __name__ == "__main__":
    sys.exit(main())
