"""Events per second: `settle replay edits` vs the live settle worker, same broker, same run.

One embedded broker, one simulated span. The live figure is end to end with a
warmed-up Faust worker (produce to `edits` until every example is on
`settled`); the replay figure re-settles the very same topic into a new prefix
with the plain aiokafka loop (consumer start, span planning and producing the
output included; the span ends at the known end offsets, so no idle wait is
counted). Both outputs are checked equal before the ratio is printed.

    python bench/replay.py --sessions 200
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
from settle.schemas.events import PredictionRequested, Span as Region, Tick
from settle.streams.kafka.io import iter_topic, produce_lines, read_topic
from settle.streams.kafka.replay import Span, replay_edits
from settle.streams.kafka.topics import ensure_topics_sync
from settle.streams.local.broker import EmbeddedBroker
from settle.streams.local.processes import WorkerProcess
from settle.streams.settings import EDITS, SETTLED, Settings
from settle.streams.settling.reference import settle_records
from settle.streams.settling.tracker import region_id
from settle.streams.simulate import SimulationConfig, simulate


async def _settled_values(settings: Settings, idle_s: float = 0.5) -> dict[str, bytes]:
    return {decode_settled(r.value).id: r.value async for r in iter_topic(settings, SETTLED, idle_s=idle_s, max_s=600)}


def _wait_for(settings: Settings, want: set[str], timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while not want <= seen:
        if time.monotonic() > deadline:
            raise SystemExit(f"live worker timed out: {len(want & seen)}/{len(want)} settled")
        seen = set(asyncio.run(_settled_values(settings, idle_s=0.3)))
    return time.monotonic()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()
    console = Console()

    events = simulate(SimulationConfig(sessions=args.sessions, seed=args.seed))
    lines = [encode(e) for e in events]
    settings = Settings(topic_prefix="bench.", group_prefix="bench", partitions=args.partitions)
    want = {e.id for e in settle_records(enumerate(lines), settings.tracker).examples}
    console.print(f"{len(lines):,} events, {len(want):,} settled examples expected")

    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker:
        s = replace(settings, bootstrap=broker.bootstrap, data_dir=Path(tmp) / "w")
        ensure_topics_sync(s)
        worker = WorkerProcess(s, Path(tmp) / "worker.log").start()
        try:
            warm = PredictionRequested(time_ms=0, session_id="warmup", path="w.py", consent=True, request_id="warm",
                                       region=Region(start=0, end=1), region_text="x", cursor=0)
            asyncio.run(produce_lines(s, [encode(warm), encode(Tick(time_ms=30_000))]))
            _wait_for(s, {region_id("warmup", "w.py", "warm")}, 120)
            t0 = time.monotonic()
            produced = asyncio.run(produce_lines(s, lines))
            t1 = _wait_for(s, want, 900)
            if not worker.alive:
                raise SystemExit(worker.log_tail())
        finally:
            worker.stop()
        live_rate = produced / (t1 - t0)
        live = asyncio.run(_settled_values(s))

        ends: dict[int, int] = {}
        for r in asyncio.run(read_topic(s, EDITS, idle_s=1.0, max_s=600)):
            ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
        total = sum(ends.values())
        report = asyncio.run(replay_edits(s, "bench-replay.", Span(to_offsets=ends), idle_s=2.0))
        replayed = asyncio.run(_settled_values(replace(s, topic_prefix="bench-replay.")))
        same = replayed == {k: v for k, v in live.items() if k in replayed} and set(replayed) == set(live)
        replay_rate = report.records / report.seconds

    table = Table(title=f"settle: replay vs live worker ({total:,} records on `edits`, {args.partitions} partitions)")
    for col in ("path", "records", "seconds", "records/s"):
        table.add_column(col, justify="right" if col != "path" else "left")
    table.add_row("live settle worker (Faust, end to end)", f"{produced:,}", f"{t1 - t0:.2f}", f"{live_rate:,.0f}")
    table.add_row("settle replay edits (aiokafka getmany)", f"{report.records:,}", f"{report.seconds:.2f}",
                  f"{replay_rate:,.0f}")
    console.print(table)
    console.print(f"settled examples: live {len(live):,}, replay {len(replayed):,}; byte-identical: {same}")
    console.print(f"replay / live per event: {replay_rate / live_rate:.2f}x")
    if not same:
        raise SystemExit("replay output differs from the live run")


if __name__ == "__main__":
    main()
