"""Edit events per second: the pure tracker vs the full Faust pipeline on the embedded broker.

Same simulated telemetry, same run. The pure figure is decode + track in one
Python loop; the pipeline figure is end to end (produce to `edits`, Faust
worker, `settled` on the broker) with a warmed-up worker. Their ratio is what
the stream machinery costs per event.

    python bench/settle_throughput.py --sessions 200
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from settle.schemas.codecs import decode_settled, encode
from settle.schemas.events import PredictionRequested, Span, Tick
from settle.streams.kafka.io import iter_topic, produce_lines
from settle.streams.kafka.topics import ensure_topics_sync
from settle.streams.local.broker import EmbeddedBroker
from settle.streams.local.processes import WorkerProcess
from settle.streams.settings import SETTLED, Settings
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate


def pure(lines: list[bytes], settings: Settings, repeats: int) -> tuple[float, set[str]]:
    """Best-of-``repeats`` events/s of the offline tracker, and the ids it settles."""
    best = float("inf")
    ids: set[str] = set()
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = settle_records(enumerate(lines), settings.tracker)
        best = min(best, time.perf_counter() - t0)
        ids = {e.id for e in result.examples}
    return len(lines) / best, ids


async def _wait_for(settings: Settings, want: set[str], timeout_s: float) -> float:
    """Seconds until every wanted id is on `settled` (polling from the start of the topic)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while not want <= seen:
        if time.monotonic() > deadline:
            raise SystemExit(f"pipeline timed out: {len(want & seen)}/{len(want)} settled")
        async for r in iter_topic(settings, SETTLED, idle_s=0.3, max_s=5):
            seen.add(decode_settled(r.value).id)
    return time.monotonic()


def pipeline(lines: list[bytes], settings: Settings, want: set[str], work: Path) -> float:
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        s = replace(settings, bootstrap=broker.bootstrap, data_dir=work / "w")
        ensure_topics_sync(s)
        worker = WorkerProcess(s, work / "worker.log").start()
        try:
            warm = PredictionRequested(
                time_ms=0, session_id="warmup", path="w.py", consent=True, request_id="warm",
                region=Span(start=0, end=1), region_text="x", cursor=0,
            )
            asyncio.run(produce_lines(s, [encode(warm), encode(Tick(time_ms=30_000))]))
            from settle.streams.settling.tracker import region_id

            asyncio.run(_wait_for(s, {region_id("warmup", "w.py", "warm")}, 120))
            t0 = time.monotonic()
            asyncio.run(produce_lines(s, lines))
            t1 = asyncio.run(_wait_for(s, want, 600))
            if not worker.alive:
                raise SystemExit(worker.log_tail())
            return len(lines) / (t1 - t0)
        finally:
            worker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    console = Console()
    settings = Settings(partitions=args.partitions)
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=args.sessions, seed=args.seed))]
    console.print(f"{len(lines)} events from {args.sessions} simulated sessions")
    pure_rate, reference = pure(lines, settings, args.repeats)
    n = len(reference)
    with tempfile.TemporaryDirectory() as tmp:
        pipe_rate = pipeline(lines, settings, reference, Path(tmp))
    table = Table(title=f"settle throughput ({len(lines)} events, {n} settled, {args.partitions} partitions)")
    table.add_column("path")
    table.add_column("events/s", justify="right")
    table.add_column("vs pure", justify="right")
    table.add_row("pure tracker (decode + track, 1 loop)", f"{pure_rate:,.0f}", "1.00x")
    table.add_row("Faust pipeline on embedded broker (end to end)", f"{pipe_rate:,.0f}", f"{pipe_rate / pure_rate:.3f}x")
    console.print(table)
    console.print(f"pipeline overhead: pure is {pure_rate / pipe_rate:.1f}x faster per event")


if __name__ == "__main__":
    main()
