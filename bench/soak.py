"""Soak: a steady input rate for minutes, buffers opening and closing; is the settle worker's memory flat?

A producer sends simulated editor sessions (``settle.streams.simulate``) to `edits`
continuously, paced to the wall clock: sessions start at a steady rate, type for
a minute or several, and stop, so regions open, settle or expire (TTL, size cap)
and buffers go idle all the time. Event time follows the wall clock. Ticks (the
partition clock when buffers are quiet) come from the producer, one per
partition per second, just behind what it has sent (``--ticks stream``, the
default); ``--ticks live`` has the workers tick the wall clock into their
partitions instead, as a deployment does. On Tansu's s3 engine that makes two
writers on one `edits` partition, and it refuses one of two racing produce
requests (AlreadyExists on the batch object, UnknownError to the client; seen
after ~50 s at 1,000 events/s): refused sends are counted, not retried.

Every ``--interval-s`` it samples: records produced (counted here: the broker's
end offsets are unreliable, NOTES.md), the settle group's committed offset per
partition (lag = the partition's head as the producer's acknowledgements give
it, worker ticks included, minus the committed offset), `settled` records and
distinct ids, each worker's open regions, late events and lowest partition
watermark (its Prometheus metrics; wall clock minus watermark says whether
processing keeps up, which lag alone cannot: a worker may consume everything and
still commit late), and the RSS and CPU of every process: the workers, the
broker and its S3 server. A table over time, a summary and a PNG plot follow; the run fails
(exit 1) when a worker's RSS grows faster than ``--max-slope-mb-per-min`` over
the second half, or a worker dies.

The broker keeps its records on Tansu's s3 storage engine (moto's S3 server,
``settle.streams.local.s3``), the only persistent engine the shipped Tansu 0.6.0
has. Topics are created with an explicit ``retention.ms`` (``--retention-ms``),
but that engine never deletes records (its DeleteRecords is unimplemented and its
maintenance pass only touches the data lake), so the S3 server's memory grows
with the input: the broker's figures are reported, and only the workers' are checked.

    python bench/soak.py --rate 1000 --minutes 10 --plot var/soak/soak.png --csv var/soak/soak.csv
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import heapq
import itertools
import math
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from rich.console import Console
from rich.table import Table

from settle.schemas.codecs import encode
from settle.schemas.events import Tick
from settle.streams.kafka.io import key_of
from settle.streams.kafka.topics import ensure_topics, topic_configs
from settle.streams.local.broker import EmbeddedBroker, free_port
from settle.streams.local.processes import WorkerProcess
from settle.streams.local.s3 import LocalS3
from settle.streams.settings import EDITS, SETTLED, Settings
from settle.streams.simulate import SimulationConfig, simulate

MB = 1024 * 1024
#: session starts generated per chunk, in seconds of event time
CHUNK_S = 20.0
_SENT: tuple[int, bytes | None, bytes] = (0, None, b"")

# ---------------------------------------------------------------- the producer


def _chunk(seed: int, sessions: int, start_ms: int, spread_ms: int, jitter_ms: int,
           not_before_ms: int) -> list[tuple[int, bytes | None, bytes]]:
    """One chunk of sessions as (clock ms, key, line) in delivery order; runs in a pool process.

    The clock is the running maximum of event time, so merging chunks by it keeps each chunk's
    own order (a buffer's events stay in order) and never sends an event before its time.
    Events whose clock is before ``not_before_ms`` (the start of the input) are left out.
    """
    config = SimulationConfig(sessions=sessions, seed=seed, start_ms=start_ms, session_spread_ms=spread_ms,
                              jitter_ms=jitter_ms, final_tick=False)
    out: list[tuple[int, bytes | None, bytes]] = []
    clock = 0
    for event in simulate(config):
        raw = encode(event)
        clock = max(clock, event.time_ms)
        if clock >= not_before_ms:
            out.append((clock, key_of(raw)[0], raw))
    return out


def events_per_session(seed: int, sessions: int = 100) -> float:
    """Mean events of a simulated session (seeds apart from the run's), to pace sessions to a rate."""
    config = SimulationConfig(sessions=sessions, seed=seed + 1_000_003, final_tick=False)
    return len(simulate(config)) / sessions


@dataclass
class Producer:
    """Sends simulated sessions to `edits` as their event time comes due on the wall clock.

    Sessions start every ``spread_ms`` (chosen so that sessions x events per session gives
    ``rate``), from ``prestart_s`` before ``t0_ms``: events before ``t0_ms`` are not sent, so the
    rate is near steady from the start instead of ramping up over a session's life (minutes).
    """

    settings: Settings
    rate: float
    t0_ms: int
    seed: int
    prestart_s: float
    jitter_ms: int
    ticks: str
    pool: ProcessPoolExecutor
    spread_ms: int = 0
    produced: int = 0
    ticks_sent: int = 0
    #: sends the broker refused (Tansu's s3 engine refuses one of two writers racing on a partition)
    failed: int = 0
    #: per partition: offset after the last acknowledged record (records before it, any writer's)
    head: dict[int, int] = field(default_factory=dict)
    #: how far behind its schedule the producer ran, ms (largest since the last look)
    behind_ms: float = 0.0
    _chunks: dict[int, list[tuple[int, bytes | None, bytes]]] = field(default_factory=dict)

    def chunk_sessions(self) -> int:
        return max(1, math.ceil(CHUNK_S * 1000 / self.spread_ms))

    def chunk_start_ms(self, k: int) -> int:
        return int(self.t0_ms - self.prestart_s * 1000) + k * self.chunk_sessions() * self.spread_ms

    def submit(self, k: int) -> asyncio.Future[list[tuple[int, bytes | None, bytes]]]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self.pool, _chunk, self.seed * 1_000_000 + k, self.chunk_sessions(),
                                    self.chunk_start_ms(k), self.spread_ms, self.jitter_ms, self.t0_ms)

    def _acked(self, fut: asyncio.Future) -> None:  # type: ignore[type-arg]
        if fut.cancelled() or fut.exception() is not None:
            self.failed += 1  # the record is not on the topic; counted, the input goes on
            return
        md = fut.result()
        self.head[md.partition] = max(self.head.get(md.partition, 0), md.offset + 1)

    async def run(self, stop: asyncio.Event, futures: dict[int, asyncio.Future]) -> None:  # type: ignore[type-arg]
        name = self.settings.topic(EDITS)
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap, acks="all", linger_ms=5,
                                    max_batch_size=256 * 1024)
        await producer.start()
        try:
            partitions = sorted(await producer.partitions_for(name))
            heap: list[tuple[int, int, int]] = []
            next_k = 0
            inflight: list[asyncio.Future] = []  # type: ignore[type-arg]
            next_tick = time.time()
            while not stop.is_set():
                now_ms = time.time() * 1000 + self.jitter_ms  # events may run ahead by the jitter (clock skew)
                while self.chunk_start_ms(next_k) <= now_ms:  # a chunk is loaded before any of its events is due
                    chunk = await futures.pop(next_k)
                    if next_k + 2 not in futures:
                        futures[next_k + 2] = self.submit(next_k + 2)
                    if chunk:
                        self._chunks[next_k] = chunk
                        heapq.heappush(heap, (chunk[0][0], next_k, 0))
                    next_k += 1
                if heap and heap[0][0] <= now_ms:
                    self.behind_ms = max(self.behind_ms, now_ms - heap[0][0] - self.jitter_ms)
                while heap and heap[0][0] <= now_ms:
                    _, k, i = heapq.heappop(heap)
                    chunk = self._chunks[k]
                    _, key, raw = chunk[i]
                    fut = await producer.send(name, value=raw, key=key)
                    fut.add_done_callback(self._acked)
                    inflight.append(fut)
                    self.produced += 1
                    chunk[i] = _SENT  # a chunk lives as long as its longest session: keep only what is unsent
                    if i + 1 < len(chunk):
                        heapq.heappush(heap, (chunk[i + 1][0], k, i + 1))
                    else:
                        del self._chunks[k]
                if self.ticks == "stream" and time.time() >= next_tick:
                    # nothing sent from now on is older than this (the chunks' clocks only grow)
                    tick = encode(Tick(time_ms=int(now_ms) - 2 * self.jitter_ms, source="soak"))
                    for p in partitions:
                        fut = await producer.send(name, value=tick, partition=p)
                        fut.add_done_callback(self._acked)
                        inflight.append(fut)
                        self.ticks_sent += 1
                    next_tick += 1.0
                if len(inflight) >= 2000:
                    await asyncio.gather(*inflight, return_exceptions=True)
                    inflight.clear()
                await asyncio.sleep(0.01)
            await asyncio.gather(*inflight, return_exceptions=True)
        finally:
            await producer.stop()


# ---------------------------------------------------------------- what is sampled


@dataclass
class Sample:
    t_s: float
    produced: int
    head: int
    committed: int
    #: sum over partitions of head - committed (records the settle group has not committed yet)
    lag: int
    settled: int
    settled_ids: int
    regions_open: float
    #: wall clock minus the workers' lowest partition watermark, s: how far behind processing runs
    #: (the watermark trails the newest event by the allowed lateness, 2 s by default)
    watermark_behind_s: float
    late: float
    dropped: float
    behind_s: float
    load1: float
    rss_mb: dict[str, float]
    cpu_pct: dict[str, float]


def rss_of(proc: psutil.Process) -> int:
    """RSS of a process and its children, bytes (0 once it is gone)."""
    total = 0
    try:
        for p in [proc, *proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        return 0
    return total


def cpu_seconds(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
        return t.user + t.system + sum(c.cpu_times().user + c.cpu_times().system
                                       for c in proc.children(recursive=True))
    except psutil.NoSuchProcess:
        return 0.0


def scrape(port: int) -> dict[str, float]:
    """A worker's open regions, late events, drops (sums) and lowest watermark (its /metrics); empty if it does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    wanted = {"settle_regions_open": "regions_open", "settle_late_events": "late", "settle_dropped": "dropped"}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "settle_watermark_ms" and family.samples:
            out["watermark_ms"] = min(s.value for s in family.samples)
        if family.name in wanted:
            out[wanted[family.name]] = sum(s.value for s in family.samples if not s.name.endswith("_created"))
    return out


@dataclass
class Watch:
    """The processes watched, by label, and their CPU seconds at the last look."""

    procs: dict[str, psutil.Process]
    _cpu: dict[str, tuple[float, float]] = field(default_factory=dict)

    def look(self) -> tuple[dict[str, float], dict[str, float]]:
        rss, cpu = {}, {}
        now = time.monotonic()
        for label, proc in self.procs.items():
            rss[label] = rss_of(proc) / MB
            seconds = cpu_seconds(proc)
            before = self._cpu.get(label)
            cpu[label] = 100 * (seconds - before[1]) / (now - before[0]) if before else 0.0
            self._cpu[label] = (now, seconds)
        return rss, cpu


async def count_settled(settings: Settings, counts: Counter[str], ids: set[bytes], stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(settings.topic(SETTLED), bootstrap_servers=settings.bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        while not stop.is_set():
            for msgs in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                counts["records"] += len(msgs)
                ids.update(m.key for m in msgs if m.key is not None)
    finally:
        await consumer.stop()


# ---------------------------------------------------------------- topics, S3


async def create_topics(settings: Settings, retention_ms: int) -> dict[str, dict[str, str]]:
    """`edits` and `settled` with an explicit retention, the rest as settle creates them; the configs read back."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        configs = {n: {**topic_configs(settings, n), "retention.ms": str(retention_ms)} for n in (EDITS, SETTLED)}
        await admin.create_topics([NewTopic(settings.topic(n), settings.partitions, 1, topic_configs=c)
                                   for n, c in configs.items()])
        await ensure_topics(settings)
        resources = [ConfigResource(ConfigResourceType.TOPIC, settings.topic(n)) for n in configs]
        described: dict[str, dict[str, str]] = {}
        for response in await admin.describe_configs(resources):
            for resource in response.resources:
                described[resource[3]] = {entry[0]: entry[1] for entry in resource[4]}
        return described
    finally:
        await admin.close()


def bucket_usage(s3: LocalS3) -> tuple[int, int]:
    """(objects, bytes) in the S3 bucket, through the ListObjectsV2 API."""
    objects = size = 0
    token = None
    while True:
        url = f"{s3.endpoint}/{s3.bucket}?list-type=2"
        if token:
            url += "&continuation-token=" + urllib.parse.quote(token)
        with urllib.request.urlopen(url, timeout=30) as resp:  # moto accepts unsigned requests
            body = resp.read().decode()
        objects += body.count("<Key>")
        size += sum(int(x) for x in re.findall(r"<Size>(\d+)</Size>", body))
        more = re.search(r"<NextContinuationToken>(.*?)</NextContinuationToken>", body)
        if not more:
            return objects, size
        token = more.group(1)


async def earliest_offsets(settings: Settings) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic(EDITS), p) for p in range(settings.partitions)]
        return {tp.partition: o for tp, o in (await consumer.beginning_offsets(tps)).items()}
    finally:
        await consumer.stop()


# ---------------------------------------------------------------- the run


@dataclass
class Run:
    samples: list[Sample]
    configs: dict[str, dict[str, str]]
    earliest: dict[int, int]
    bucket: tuple[int, int]
    producer: Producer
    workers_alive: list[bool]
    duration_s: float


async def soak(args: argparse.Namespace, settings: Settings, workers: list[WorkerProcess], ports: list[int],
               watch: Watch, s3: LocalS3 | None, t0_ms: int, futures_start: dict[int, asyncio.Future],  # type: ignore[type-arg]
               producer: Producer, console: Console) -> Run:
    stop = asyncio.Event()
    counts: Counter[str] = Counter()
    ids: set[bytes] = set()
    settled_task = asyncio.create_task(count_settled(settings, counts, ids, stop))
    group = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=f"{settings.group_prefix}-settle",
                             enable_auto_commit=False)
    await group.start()
    tps = [TopicPartition(settings.topic(EDITS), p) for p in range(settings.partitions)]
    await asyncio.sleep(max(0.0, t0_ms / 1000 - time.time()))
    started = time.monotonic()
    produce_task = asyncio.create_task(producer.run(stop, futures_start))
    samples: list[Sample] = []
    duration_s = args.minutes * 60
    try:
        for n in itertools.count(1):
            await asyncio.sleep(max(0.0, started + n * args.interval_s - time.monotonic()))
            if produce_task.done():
                produce_task.result()  # raise what stopped it
            committed = {}
            for tp in tps:
                committed[tp.partition] = await group.committed(tp) or 0
            metrics = [await asyncio.to_thread(scrape, port) for port in ports]
            rss, cpu = watch.look()
            head = dict(producer.head)
            sample = Sample(
                t_s=time.monotonic() - started, produced=producer.produced, head=sum(head.values()),
                committed=sum(committed.values()),
                lag=sum(max(0, head.get(p, 0) - committed[p]) for p in committed),
                settled=counts["records"], settled_ids=len(ids),
                regions_open=sum(m.get("regions_open", 0.0) for m in metrics),
                watermark_behind_s=max((time.time() - m["watermark_ms"] / 1000 for m in metrics if "watermark_ms" in m),
                                       default=0.0),
                late=sum(m.get("late", 0.0) for m in metrics), dropped=sum(m.get("dropped", 0.0) for m in metrics),
                behind_s=producer.behind_ms / 1000, load1=os.getloadavg()[0], rss_mb=rss, cpu_pct=cpu,
            )
            producer.behind_ms = 0.0
            samples.append(sample)
            console.print(
                f"{sample.t_s:6.0f} s  produced {sample.produced:>9,}  committed {sample.committed:>9,}  "
                f"lag {sample.lag:>8,}  behind {sample.watermark_behind_s:5.1f} s  settled {sample.settled:>7,}  open {sample.regions_open:>6,.0f}  "
                + "  ".join(f"{k} {v:,.0f} MB {cpu[k]:.0f}%" for k, v in rss.items())
                + f"  load {sample.load1:.1f}",
                highlight=False,
            )
            for w in workers:
                if not w.alive:
                    console.print(f"[red]a worker died[/red]\n{w.log_tail()}")
                    stop.set()
            if stop.is_set() or sample.t_s >= duration_s:
                break
    finally:
        stop.set()
        await asyncio.gather(produce_task, settled_task, return_exceptions=True)
        await group.stop()
    earliest = await earliest_offsets(settings)
    bucket = await asyncio.to_thread(bucket_usage, s3) if s3 is not None else (0, 0)
    return Run(samples, {}, earliest, bucket, producer, [w.alive for w in workers], time.monotonic() - started)


# ---------------------------------------------------------------- report


def slope_mb_per_min(samples: list[Sample], label: str) -> float:
    """Least-squares slope of a process's RSS over the samples, MB per minute (0 with fewer than 3)."""
    if len(samples) < 3:
        return 0.0
    xs = [s.t_s / 60 for s in samples]
    ys = [s.rss_mb.get(label, 0.0) for s in samples]
    return statistics.linear_regression(xs, ys).slope


def summarize(run: Run, args: argparse.Namespace, labels: list[str], console: Console) -> list[str]:
    """Print the table over time and the summary; return the failures (empty = pass)."""
    samples = run.samples
    if not samples:
        return ["no samples"]
    step = max(1, math.ceil(len(samples) / args.table_rows))
    shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    table = Table(title=f"soak over time (every {step * args.interval_s:g} s)")
    for col in ("t (s)", "produced", "in/s", "committed", "out/s", "lag", "behind s", "settled", "open regions",
                "late"):
        table.add_column(col, justify="right")
    for label in labels:
        table.add_column(f"{label} RSS MB", justify="right")
    table.add_column("load", justify="right")
    prev: Sample | None = None
    for s in shown:
        dt = s.t_s - prev.t_s if prev else s.t_s
        rate_in = (s.produced - (prev.produced if prev else 0)) / dt if dt else 0.0
        rate_out = (s.committed - (prev.committed if prev else 0)) / dt if dt else 0.0
        table.add_row(f"{s.t_s:.0f}", f"{s.produced:,}", f"{rate_in:,.0f}", f"{s.committed:,}", f"{rate_out:,.0f}",
                      f"{s.lag:,}", f"{s.watermark_behind_s:.1f}", f"{s.settled:,}", f"{s.regions_open:,.0f}", f"{s.late:,.0f}",
                      *(f"{s.rss_mb.get(label, 0.0):,.0f}" for label in labels), f"{s.load1:.1f}")
        prev = s
    console.print(table)

    warm = [s for s in samples if s.t_s >= args.warmup_s] or samples
    half = samples[-1].t_s / 2
    second = [s for s in samples if s.t_s >= half]
    first_w, last = warm[0], samples[-1]
    elapsed = last.t_s - first_w.t_s
    produced_rate = (last.produced - first_w.produced) / elapsed if elapsed > 0 else 0.0
    committed_rate = (last.committed - first_w.committed) / elapsed if elapsed > 0 else 0.0
    lag_slope = statistics.linear_regression([s.t_s / 60 for s in second], [float(s.lag) for s in second]).slope \
        if len(second) >= 3 else 0.0

    summary = Table(title=f"soak summary ({last.t_s / 60:.1f} min, warm-up {args.warmup_s:g} s excluded, "
                          f"slope over the second half: t >= {half:.0f} s)")
    summary.add_column("process")
    summary.add_column("RSS after warm-up MB", justify="right")
    summary.add_column("RSS at end MB", justify="right")
    summary.add_column("end / start", justify="right")
    summary.add_column("slope 2nd half MB/min", justify="right")
    summary.add_column("mean CPU % (2nd half)", justify="right")
    failures = []
    for label in labels:
        a, b = first_w.rss_mb.get(label, 0.0), last.rss_mb.get(label, 0.0)
        slope = slope_mb_per_min(second, label)
        cpu = statistics.fmean(s.cpu_pct.get(label, 0.0) for s in second) if second else 0.0
        checked = label.startswith("worker")
        summary.add_row(label + ("" if checked else " (not checked)"), f"{a:,.1f}", f"{b:,.1f}",
                        f"{b / a:.2f}x" if a else "-", f"{slope:+.2f}", f"{cpu:.0f}")
        if checked and slope > args.max_slope_mb_per_min:
            failures.append(f"{label}: RSS slope {slope:+.2f} MB/min over the second half > "
                            f"{args.max_slope_mb_per_min:g}")
    console.print(summary)
    p = run.producer
    loads = [s.load1 for s in samples]
    lines = [
        (f"input: target {args.rate:,.0f} events/s; sent {produced_rate:,.0f} events/s after warm-up "
         f"({p.produced:,} events, {p.ticks_sent:,} producer ticks, {p.failed:,} sends refused by the broker); sessions start every {p.spread_ms} ms; "
         f"producer at most {max(s.behind_s for s in samples):.1f} s behind its schedule"),
        (f"settle group committed {committed_rate:,.0f} records/s after warm-up "
         f"({committed_rate / produced_rate:.2f}x the input)" if produced_rate else "settle group: no input"),
        (f"lag (head - committed, records): max {max(s.lag for s in samples):,}, at end {last.lag:,}, "
         f"mean over the second half {statistics.fmean(s.lag for s in second) if second else 0:,.0f}, "
         f"trend over the second half {lag_slope:+,.0f} records/min"),
        (f"processing behind the wall clock (now - lowest watermark): max "
         f"{max(s.watermark_behind_s for s in warm):.1f} s after warm-up, at end {last.watermark_behind_s:.1f} s"),
        (f"settled: {last.settled:,} records, {last.settled_ids:,} distinct ids; open regions at end "
         f"{last.regions_open:,.0f} (max {max(s.regions_open for s in samples):,.0f}); late events "
         f"{last.late:,.0f}; dropped regions {last.dropped:,.0f}"),
        (f"load average (1 min) during the run: min {min(loads):.1f}, mean {statistics.fmean(loads):.1f}, "
         f"max {max(loads):.1f} on {os.cpu_count()} CPUs"),
    ]
    if args.storage == "s3":
        edits = run.configs.get(f"{args.prefix}{EDITS}", {})
        lines.append(
            f"broker: Tansu s3 engine on moto; `edits` configs as described by the broker: {edits or 'none'}; "
            f"earliest offsets of `edits` at end {run.earliest} (all 0 = nothing deleted: retention "
            f"{'not applied' if not any(run.earliest.values()) else 'applied'} after {last.t_s / 60:.1f} min with "
            f"retention.ms={args.retention_ms}); bucket holds {run.bucket[0]:,} objects, {run.bucket[1] / MB:,.1f} MB"
        )
    else:
        lines.append("broker: Tansu memory engine (keeps every record in its own memory)")
    for line in lines:
        console.print(line, highlight=False)
    if not all(run.workers_alive):
        failures.append("a worker died during the run")
    return failures


def plot(samples: list[Sample], labels: list[str], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    minutes = [s.t_s / 60 for s in samples]
    fig, (ax_rss, ax_lag, ax_rate) = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    for label in labels:
        ax_rss.plot(minutes, [s.rss_mb.get(label, 0.0) for s in samples], label=label)
    ax_rss.set_ylabel("RSS (MB)")
    ax_rss.legend(loc="upper left")
    ax_lag.plot(minutes, [s.lag for s in samples], label="lag: head - committed")
    ax_lag.set_ylabel("lag (records)")
    ax_lag.legend(loc="upper left")
    ax_open = ax_lag.twinx()
    ax_open.plot(minutes, [s.regions_open for s in samples], color="tab:orange", label="open regions (workers)")
    ax_open.set_ylabel("open regions")
    ax_open.legend(loc="upper right")
    rate_in, rate_out = [], []
    for prev, s in zip([None, *samples[:-1]], samples):
        dt = s.t_s - (prev.t_s if prev else 0.0)
        rate_in.append((s.produced - (prev.produced if prev else 0)) / dt if dt else 0.0)
        rate_out.append((s.committed - (prev.committed if prev else 0)) / dt if dt else 0.0)
    ax_rate.plot(minutes, rate_in, label="produced events/s")
    ax_rate.plot(minutes, rate_out, label="committed records/s (settle group)")
    ax_rate.set_ylabel("per second")
    ax_rate.set_xlabel("minutes")
    ax_rate.legend(loc="upper left")
    for ax in (ax_rss, ax_lag, ax_rate):
        ax.axvspan(0, args.warmup_s / 60, color="0.9")
        ax.grid(alpha=0.3)
    fig.suptitle(f"settle soak: {args.rate:,.0f} events/s target, {args.workers} settle worker(s), "
                 f"{args.storage} broker storage")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_csv(samples: list[Sample], labels: list[str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["t_s", "produced", "head", "committed", "lag", "watermark_behind_s", "settled", "settled_ids", "regions_open", "late",
                      "dropped", "producer_behind_s", "load1", *(f"{x}_rss_mb" for x in labels),
                      *(f"{x}_cpu_pct" for x in labels)])
        for s in samples:
            out.writerow([f"{s.t_s:.1f}", s.produced, s.head, s.committed, s.lag, f"{s.watermark_behind_s:.1f}", s.settled, s.settled_ids,
                          f"{s.regions_open:.0f}", f"{s.late:.0f}", f"{s.dropped:.0f}", f"{s.behind_s:.2f}",
                          f"{s.load1:.2f}", *(f"{s.rss_mb.get(x, 0.0):.1f}" for x in labels),
                          *(f"{s.cpu_pct.get(x, 0.0):.1f}" for x in labels)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000, help="input events per second (default 1000)")
    ap.add_argument("--minutes", type=float, default=10, help="how long the input runs (default 10)")
    ap.add_argument("--workers", type=int, default=1, help="settle worker processes (default 1)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--interval-s", type=float, default=5.0, help="seconds between samples (default 5)")
    ap.add_argument("--warmup-s", type=float, default=60.0, help="samples before this are not the start figure")
    ap.add_argument("--max-slope-mb-per-min", type=float, default=2.0,
                    help="fail when a worker's RSS grows faster than this over the second half (default 2)")
    ap.add_argument("--ticks", choices=("live", "stream"), default="stream",
                    help="stream: the producer sends the ticks (default); live: the workers tick the wall clock into "
                         "their partitions, a second writer on `edits`, which Tansu's s3 engine races (see above)")
    ap.add_argument("--storage", choices=("s3", "memory"), default="s3",
                    help="Tansu's storage engine: s3 (moto's server, default) or memory")
    ap.add_argument("--retention-ms", type=int, default=120_000, help="retention.ms of `edits` and `settled`")
    ap.add_argument("--prestart-s", type=float, default=600.0,
                    help="sessions begin this long before the run (their earlier events are not sent): a steady rate from the start")
    ap.add_argument("--jitter-ms", type=int, default=500, help="cross-buffer delivery disorder of the simulation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--startup-s", type=float, default=60.0, help="time for the broker and workers to start before input")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                    help="a worker setting (a Settings field), e.g. memory_ms=60000 to see the idle-buffer memory "
                         "plateau within the run (default 1 h); repeatable")
    ap.add_argument("--prefix", default="soak.", help="topic prefix")
    ap.add_argument("--plot", type=Path, default=None, help="PNG path (default var/soak/soak-<time>.png)")
    ap.add_argument("--csv", type=Path, default=None, help="also write every sample here")
    ap.add_argument("--workdir", type=Path, default=None, help="logs and worker data (default a temporary directory)")
    ap.add_argument("--table-rows", type=int, default=30, help="rows of the table over time")
    args = ap.parse_args()
    if args.rate <= 0 or args.minutes <= 0 or args.workers < 1 or args.interval_s <= 0:
        ap.error("--rate, --minutes, --interval-s must be > 0 and --workers >= 1")
    if args.warmup_s >= args.minutes * 60 / 2:
        ap.error(f"--warmup-s {args.warmup_s:g} leaves less than half of a {args.minutes:g}-minute run to measure:"
                 " lengthen --minutes or shorten --warmup-s")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    plot_path = args.plot or Path("var/soak") / f"soak-{stamp}.png"
    console = Console(width=None if sys.stdout.isatty() else 200)  # a log file gets the whole table
    with tempfile.TemporaryDirectory(prefix="settle-soak-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        return _run(args, work, plot_path, console)


def overrides(pairs: list[str]) -> dict[str, object]:
    """``FIELD=VALUE`` pairs as Settings fields, each converted to the type of the field's default."""
    defaults = Settings()
    out: dict[str, object] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or name not in {f.name for f in fields(Settings)}:
            raise SystemExit(f"--set {pair!r}: expected FIELD=VALUE with FIELD a Settings field")
        kind = type(getattr(defaults, name))
        if kind is bool:
            out[name] = raw.strip().lower() in ("1", "true", "yes", "on")
        else:
            out[name] = kind(raw)
    return out


def _run(args: argparse.Namespace, work: Path, plot_path: Path, console: Console) -> int:
    per_session = events_per_session(args.seed)
    spread_ms = max(1, round(1000 * per_session / args.rate))
    t0_ms = int((time.time() + args.startup_s) * 1000)
    pool = ProcessPoolExecutor(max_workers=1)
    s3 = LocalS3(log_path=work / "s3.log") if args.storage == "s3" else None
    broker: EmbeddedBroker | None = None
    workers: list[WorkerProcess] = []
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        settings = replace(Settings(topic_prefix=args.prefix, partitions=args.partitions,
                                    tick_interval_s=1.0 if args.ticks == "live" else 0.0), **overrides(args.overrides))
        producer = Producer(settings, args.rate, t0_ms, args.seed, args.prestart_s, args.jitter_ms, args.ticks, pool,
                            spread_ms=spread_ms)

        async def first_chunks() -> dict[int, asyncio.Future]:  # type: ignore[type-arg]
            # every chunk due before the input starts, plus two ahead, generated while the broker starts
            n = 0
            while producer.chunk_start_ms(n) <= t0_ms + args.jitter_ms:
                n += 1
            return {k: producer.submit(k) for k in range(n + 2)}

        futures = loop.run_until_complete(first_chunks())
        console.print(f"{per_session:.0f} events per simulated session: a session starts every {spread_ms} ms for "
                      f"{args.rate:,.0f} events/s; input starts in {args.startup_s:g} s and runs {args.minutes:g} min")
        if s3 is not None:
            s3.start()
        broker = EmbeddedBroker(log_path=work / "broker.log", storage_engine=s3.storage_engine if s3 else
                                "memory://tansu/", env=s3.broker_env if s3 else {}).start()
        settings = replace(settings, bootstrap=broker.bootstrap)
        producer.settings = settings
        configs = loop.run_until_complete(create_topics(settings, args.retention_ms))
        ports = [free_port() for _ in range(args.workers)]
        for i, port in enumerate(ports):
            s = replace(settings, data_dir=work / f"worker{i}", metrics_port=port)
            workers.append(WorkerProcess(s, work / f"worker{i}.log").start())
        # the pids of the processes started above (their handles keep them private)
        procs = {f"worker{i}": psutil.Process(w._proc.pid) for i, w in enumerate(workers)}
        procs["tansu"] = psutil.Process(broker._proc.pid)
        if s3 is not None:
            procs["moto (s3)"] = psutil.Process(s3._proc.pid)
        watch = Watch(procs)
        watch.look()
        console.print(f"broker {broker.bootstrap} ({args.storage} storage), {args.workers} settle worker(s), "
                      f"worker settings changed: {', '.join(args.overrides) or 'none'}; logs in {work}")
        run = loop.run_until_complete(soak(args, settings, workers, ports, watch, s3, t0_ms, futures, producer,
                                           console))
        run.configs = configs
    finally:
        for w in workers:
            w.stop()
        if broker is not None:
            broker.stop()
        if s3 is not None:
            s3.stop()
        pool.shutdown(cancel_futures=True)
        loop.close()
    labels = list(procs)
    failures = summarize(run, args, labels, console)
    plot(run.samples, labels, plot_path, args)
    console.print(f"plot: {plot_path}")
    if args.csv:
        write_csv(run.samples, labels, args.csv)
        console.print(f"samples: {args.csv}")
    for failure in failures:
        console.print(f"[red]FAIL[/red] {failure}")
    if not failures:
        console.print(f"PASS: every worker's RSS slope over the second half <= {args.max_slope_mb_per_min:g} MB/min")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
