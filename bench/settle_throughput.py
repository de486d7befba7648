"""Edit events per second: settle's stream vs its peers, on the same events in one embedded-broker run.

Four measurements over the same simulated telemetry:

* **pure tracker**: `settle_records` (decode, track, kept rate, safety) in one Python
  loop, no broker: the limit the pipeline approaches.
* **settle pipeline**: `settle worker` process(es) (`WorkerProcess`), end to end.
* **Quix Streams** 3.28 `session_window` (10 s inactivity gap, keyed by buffer =
  session + path, event time from the event's `time_ms`, `.count().final()`).
* **Faust + table**: a plain Faust agent keeping each buffer's session (start, last
  time, count) in an `app.Table` (changelogged) and emitting it after 10 s of quiet:
  the same framework as settle, used idiomatically (one event per iteration).

How each stream peer is timed (live, not a pre-produced backlog): its consumer
process is started on a topic of its own (`settle.edits`, `quix.edits`,
`ftable.edits`, created with the same partitions and configs), warmed up until it
has committed one warm-up record per partition, and only then are the events
produced to that topic. The clock runs from the first produce until the consumer
group's *committed* offsets reach what was produced to every partition (counted
by the bench from delivery reports: the broker's end offsets are not trusted,
NOTES.md), so it covers produce, consume, process, outputs on the broker and the
commit. Each peer runs alone (one after the other), and the harness producer is
librdkafka (the client Quix ships) so it costs little CPU. Commits: Faust's
default interval is 2.8 s; Quix is given the same; settle also commits only what a
checkpoint covers (every `checkpoint_interval_s`). So every figure carries a fixed
tail, measured per peer as the *idle commit latency* (one record per partition on
the warmed-up consumer, produced to committed); "net of it" takes it off, the rate
a long steady stream would see. The settled ids on `settled` must equal the pure
tracker's, else the bench fails.

Quix's closing strategy: `key` (the default here) closes a buffer's session only
when that buffer speaks again, so the last session of a buffer that goes quiet is
never emitted; `partition` also closes quiet buffers' sessions as the partition's
event time moves, closer to what settle does with ticks, and is slower (NOTES.md
saw ~77 events/s; 1,356 events/s on 31,109 events here on 2026-11-30). `key` is
Quix's fast path and does a subset of settle's work, so it is the harder bar;
`--quix-closing partition` measures the other.

    python bench/settle_throughput.py --sessions 600
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from settle.schemas.codecs import decode_settled, encode
from settle.streams.kafka.io import iter_topic, key_of
from settle.streams.kafka.topics import ensure_topics_sync
from settle.streams.local.broker import EmbeddedBroker
from settle.streams.local.processes import WorkerProcess, settings_env
from settle.streams.settings import EDITS, SETTLED, Settings
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate

QUIET_MS = 10_000
#: Faust's default broker_commit_interval; Quix is given the same
COMMIT_INTERVAL_S = 2.8
#: a value every peer ignores: settle dead-letters it (no tracker state), the others skip ticks
SETTLE_WARMUP = b"warm-up: not an event"
PEER_WARMUP = encode({"kind": "tick", "time_ms": 0})


@dataclass
class Run:
    """One peer's end-to-end figure."""

    events: int
    seconds: float
    #: seconds from producing one record per partition to its commit, on the idle, warmed-up
    #: consumer: what commit intervals and checkpoints add to any run, whatever its size
    latency: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def net_rate(self) -> float:
        """events/s once the idle commit latency is taken off (a steady stream's rate); NaN (n/a) when
        the run is not at least twice its latency: the difference is then mostly noise."""
        if self.seconds < 2 * self.latency:
            return float("nan")
        return self.events / (self.seconds - self.latency)


# -- the pure tracker ----------------------------------------------------------------------


def pure(lines: list[bytes], settings: Settings, repeats: int) -> tuple[float, set[str]]:
    """Best-of-``repeats`` events/s of the offline tracker, and the ids it settles."""
    best = float("inf")
    ids: set[str] = set()
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = settle_records(enumerate(lines), settings.tracker, safety=settings.safety)
        best = min(best, time.perf_counter() - t0)
        ids = {e.id for e in result.examples}
    return len(lines) / best, ids


# -- harness: produce, count per partition, wait for committed offsets ------------------------


def produce(bootstrap: str, topic: str, lines: list[bytes], partitions: int, first: bytes | None = None) -> dict[int, int]:
    """Produce lines keyed by buffer (a tick to every partition); records delivered per partition.

    ``first`` (warm-up) goes to every partition instead, and nothing else.
    """
    from confluent_kafka import Producer

    counts: collections.Counter[int] = collections.Counter()
    failed: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(str(err))
        else:
            counts[msg.partition()] += 1

    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "partitioner": "murmur2_random",
        "queue.buffering.max.messages": 1_000_000, "enable.idempotence": False,
    })
    everywhere = range(partitions)
    items = [(first, None, True)] if first is not None else [(raw, *key_of(raw)) for raw in lines]
    for raw, key, is_tick in items:
        for p in everywhere if is_tick else (None,):
            kwargs = {"partition": p} if p is not None else {}
            while True:
                try:
                    producer.produce(topic, value=raw, key=key, on_delivery=delivered, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    if failed:
        raise SystemExit(f"produce to {topic} failed: {failed[:3]}")
    return dict(counts)


async def _committed(bootstrap: str, group: str, topic: str, want: dict[int, int], timeout_s: float) -> float:
    """monotonic() when the group's committed offset of every partition reaches ``want``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        tps = {p: TopicPartition(topic, p) for p in want}
        while True:
            got = {p: (await consumer.committed(tp)) or 0 for p, tp in tps.items()}
            now = time.monotonic()
            if all(got[p] >= n for p, n in want.items()):
                return now
            if now > deadline:
                raise TimeoutError(f"{group}: committed {got}, want {want}")
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()


def committed_by(bootstrap: str, group: str, topic: str, want: dict[int, int], timeout_s: float) -> float:
    return asyncio.run(_committed(bootstrap, group, topic, want, timeout_s))


def timed(bootstrap: str, group: str, topic: str, lines: list[bytes], partitions: int, warm: bytes,
          alive: Any, timeout_s: float) -> Run:
    """Warm the consumer up, then produce ``lines`` and time until the group committed them all.

    Two warm-up records per partition: the first waits out the group join, the second
    measures the idle commit latency.
    """
    latency = 0.0
    for n in (1, 2):
        t0 = time.monotonic()
        produce(bootstrap, topic, [], partitions, first=warm)
        try:
            latency = committed_by(bootstrap, group, topic, dict.fromkeys(range(partitions), n), 180) - t0
        except TimeoutError as exc:
            raise SystemExit(f"{group} never committed its warm-up: {exc}\n{alive()}") from None
    t0 = time.monotonic()
    counts = produce(bootstrap, topic, lines, partitions)
    want = {p: 2 + counts.get(p, 0) for p in range(partitions)}
    try:
        t1 = committed_by(bootstrap, group, topic, want, timeout_s)
    except TimeoutError as exc:
        raise SystemExit(f"{exc}\n{alive()}") from None
    return Run(sum(counts.values()), t1 - t0, latency)


# -- the peers, each its own process ---------------------------------------------------------


def settle_pipeline(lines: list[bytes], settings: Settings, work: Path, workers: int, agent_file: str | None,
                    want: set[str], timeout_s: float) -> Run:
    ensure_topics_sync(settings)
    procs: list[Any] = []
    for i in range(workers):
        log = work / f"{settings.group_prefix}-worker-{i}.log"
        if agent_file:  # a scratch copy of settle_agent.py (prototypes); same settings through SETTLE_*
            procs.append(_serve("settle-variant", settings.bootstrap, log, env=settings_env(settings),
                                extra=["--agent-file", agent_file]))
        else:
            procs.append(WorkerProcess(settings, log).start())

    def tails() -> str:
        return "\n".join(_tail(work / f"{settings.group_prefix}-worker-{i}.log") for i in range(workers))

    try:
        run = timed(settings.bootstrap, f"{settings.group_prefix}-settle", settings.topic(EDITS), lines,
                    settings.partitions, SETTLE_WARMUP, tails, timeout_s)
        seen = {decode_settled(r.value).id for r in asyncio.run(_read_all(settings))}
        if seen != want:
            raise SystemExit(f"settled ids differ from the pure tracker's: {len(seen - want)} extra, "
                             f"{len(want - seen)} missing\n{tails()}")
        return run
    finally:
        for p in procs:
            p.stop()


async def _read_all(settings: Settings) -> list[Any]:
    return [r async for r in iter_topic(settings, SETTLED, idle_s=1.0, max_s=120)]


class _Served:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _serve(role: str, bootstrap: str, log: Path, *, env: dict[str, str] | None = None,
           extra: list[str] | None = None) -> _Served:
    cmd = [sys.executable, __file__, "--serve", role, "--bootstrap", bootstrap, *(extra or [])]
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})
    return _Served(proc)


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def peer(role: str, prefix: str, group: str, lines: list[bytes], settings: Settings, work: Path,
         extra: list[str], timeout_s: float) -> Run:
    s = replace(settings, topic_prefix=prefix)
    ensure_topics_sync(s, (EDITS, SETTLED))
    log = work / f"{role}.log"
    proc = _serve(role, settings.bootstrap, log,
                  extra=["--topic", s.topic(EDITS), "--out", s.topic(SETTLED), "--group", group,
                         "--partitions", str(settings.partitions), "--state-dir", str(work / role), *extra])
    try:
        return timed(settings.bootstrap, group, s.topic(EDITS), lines, settings.partitions, PEER_WARMUP,
                     lambda: _tail(log), timeout_s)
    finally:
        proc.stop()


def serve_quix(args: argparse.Namespace) -> None:
    """Quix Streams session_window over the buffer-keyed events, event time from ``time_ms``."""
    from quixstreams import Application
    from quixstreams.models import TopicConfig

    app = Application(broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
                      commit_interval=COMMIT_INTERVAL_S, state_dir=args.state_dir, loglevel="WARNING")
    cfg = TopicConfig(num_partitions=args.partitions, replication_factor=1)
    source = app.topic(args.topic, value_deserializer="json", key_deserializer="bytes", config=cfg,
                       timestamp_extractor=lambda value, headers, ts, kind: value["time_ms"])
    sink = app.topic(args.out, value_serializer="json", key_serializer="bytes", config=cfg)
    sdf = app.dataframe(source)
    sdf = sdf.filter(lambda v: v["kind"] != "tick")
    sdf = sdf.session_window(inactivity_gap_ms=QUIET_MS).count().final(closing_strategy=args.quix_closing)
    sdf.to_topic(sink)
    app.run()


def serve_faust_table(args: argparse.Namespace) -> None:
    """A plain Faust agent: each buffer's open session in a changelogged table, emitted after 10 s of quiet."""
    import faust
    import msgspec

    # Table values as JSON (the app default); the topics carry raw bytes.
    app = faust.App(args.group, broker=f"kafka://{args.bootstrap}", key_serializer="raw", value_serializer="json",
                    web_enabled=False, datadir=args.state_dir, topic_partitions=args.partitions,
                    consumer_auto_offset_reset="earliest", topic_disable_leader=True)
    source = app.topic(args.topic, partitions=args.partitions, value_serializer="raw")
    sink = app.topic(args.out, partitions=args.partitions, value_serializer="raw")
    sessions = app.Table("sessions", default=None, partitions=args.partitions)
    decode = msgspec.json.Decoder().decode

    @app.agent(source)
    async def track(stream: Any) -> None:
        async for event in stream.events():
            value = decode(event.value)
            key = event.key
            if value.get("kind") == "tick" or key is None:
                continue
            t = value["time_ms"]
            state = sessions.get(key)
            if state is not None and t - state[1] >= QUIET_MS:
                await sink.send(key=key, value=encode({"start": state[0], "end": state[1], "count": state[2]}))
                state = None
            sessions[key] = [t, t, 1] if state is None else [state[0], max(t, state[1]), state[2] + 1]

    sys.argv = [sys.argv[0]]
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


def serve_settle_variant(args: argparse.Namespace) -> None:
    """A scratch copy of settle_agent.py (``--agent-file``) run as the worker, for prototypes."""
    spec = importlib.util.spec_from_file_location("settle_agent_variant", args.agent_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.argv = [sys.argv[0]]
    module.run_worker(Settings.from_env())


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=600, help="simulated editing sessions (~145 events each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="best of N for the pure tracker")
    ap.add_argument("--workers", type=int, default=1, help="settle worker processes")
    ap.add_argument("--peers", default="settle,quix,faust-table",
                    help="comma-separated stream peers to run (settle, quix, faust-table)")
    ap.add_argument("--quix-closing", choices=("key", "partition"), default="key")
    ap.add_argument("--variant-agent", metavar="FILE",
                    help="also run a copy of settle_agent.py (a prototype) as the settle worker, after the stock one")
    ap.add_argument("--no-scrub", action="store_true", help="SETTLE_SCRUB_SECRETS=0 for the tracker and the worker")
    ap.add_argument("--timeout", type=float, default=900, help="seconds each peer may take")
    # internal: a peer's own process
    ap.add_argument("--serve", choices=("quix", "faust-table", "settle-variant"), help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--group", help=argparse.SUPPRESS)
    ap.add_argument("--state-dir", help=argparse.SUPPRESS)
    ap.add_argument("--agent-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        {"quix": serve_quix, "faust-table": serve_faust_table, "settle-variant": serve_settle_variant}[args.serve](args)
        return

    console = Console()
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(peers) - {"settle", "quix", "faust-table"}
    if unknown:
        ap.error(f"unknown peers: {', '.join(sorted(unknown))}")
    # Caps off: they are per-source quotas, not part of the cost being measured.
    settings = Settings(partitions=args.partitions, scrub_secrets=not args.no_scrub, max_per_session=0,
                        max_per_repository=0)
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=args.sessions, seed=args.seed))]
    console.print(f"{len(lines):,} events from {args.sessions} simulated sessions; secret scrubbing "
                  f"{'on' if settings.scrub_secrets else 'off (SETTLE_SCRUB_SECRETS=0)'}; load {_load()}")
    pure_rate, reference = pure(lines, settings, args.repeats)
    runs: dict[str, Run] = {}
    loads: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with EmbeddedBroker(log_path=work / "broker.log") as broker:
            s = replace(settings, bootstrap=broker.bootstrap, data_dir=work / "w")
            if args.variant_agent:
                peers.insert(peers.index("settle") + 1 if "settle" in peers else 0, "variant")
            for name in peers:
                if name == "settle":
                    runs[name] = settle_pipeline(lines, s, work, args.workers, None, reference, args.timeout)
                elif name == "variant":
                    # Its own topics and group, so it starts from nothing as the stock worker did.
                    v = replace(s, topic_prefix="variant.", group_prefix="variant", data_dir=work / "v")
                    runs[name] = settle_pipeline(lines, v, work, args.workers, args.variant_agent, reference,
                                                 args.timeout)
                elif name == "quix":
                    runs[name] = peer("quix", "quix.", "bench-quix", lines, s, work,
                                      ["--quix-closing", args.quix_closing], args.timeout)
                else:
                    runs[name] = peer("faust-table", "ftable.", "bench-faust-table", lines, s, work, [], args.timeout)
                loads[name] = _load()
    labels = {
        "settle": f"settle pipeline ({args.workers} worker{'s' if args.workers > 1 else ''}, end to end)",
        "variant": f"settle pipeline, {Path(args.variant_agent or '').name} as the agent",
        "quix": f"Quix Streams session_window, closing={args.quix_closing}",
        "faust-table": "Faust agent + table (per-buffer session)",
    }
    table = Table(title=f"settle throughput: {len(lines):,} events, {len(reference):,} settled, "
                        f"{args.partitions} partitions")
    table.add_column("path")
    table.add_column("events/s", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("idle commit latency s", justify="right")
    table.add_column("events/s net of it", justify="right")
    table.add_column("load after", justify="right")
    table.add_row("pure tracker (settle_records, 1 loop)", f"{pure_rate:,.0f}", f"{len(lines) / pure_rate:.2f}", "",
                  "", "")
    for name, run in runs.items():
        table.add_row(labels[name], f"{run.rate:,.0f}", f"{run.seconds:.2f}", f"{run.latency:.2f}",
                      "n/a (run too short)" if run.net_rate != run.net_rate else f"{run.net_rate:,.0f}",
                      loads[name])
    console.print(table)
    if "settle" in runs:
        pipe = runs["settle"].rate
        console.print(f"pipeline / pure: {pipe / pure_rate:.3f}x")
        if "variant" in runs:
            console.print(f"variant / pipeline: {runs['variant'].rate / pipe:.2f}x; variant / pure: "
                          f"{runs['variant'].rate / pure_rate:.3f}x")
        for name in ("quix", "faust-table"):
            if name in runs:
                console.print(f"pipeline / {name}: {pipe / runs[name].rate:.2f}x (net of commit latency "
                              f"{runs['settle'].net_rate / runs[name].net_rate:.2f}x)"
                              + (f"; variant / {name}: {runs['variant'].rate / runs[name].rate:.2f}x (net "
                                 f"{runs['variant'].net_rate / runs[name].net_rate:.2f}x)" if "variant" in runs else ""))
        console.print(f"settled ids equal the pure tracker's: True ({len(reference):,})")


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
