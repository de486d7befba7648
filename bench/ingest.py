"""Events per second into `edits`: through `settle ingest` (HTTP) vs a plain aiokafka producer.

Same simulated telemetry, same embedded broker, same run. The peer is what a Kafka
client would do: one aiokafka producer (acks=all) sending every line keyed by buffer
and waiting for all acknowledgements. The endpoint runs as its own process
(`settle ingest`), posts go over HTTP in batches from a few concurrent clients, and
a post counts only when answered 2xx (every record acknowledged by the broker, every
line decoded by the stream's decoder). The ratio is what HTTP, authentication,
decoding and per-post acknowledgement cost per event.

    python bench/ingest.py --sessions 200 --batch 500 --concurrency 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import zstandard
from rich.console import Console
from rich.table import Table

from settle.schemas.codecs import encode
from settle.schemas.events import Tick
from aiokafka import AIOKafkaProducer

from settle.streams.kafka.io import key_of, read_topic
from settle.streams.kafka.topics import ensure_topics
from settle.streams.local.broker import EmbeddedBroker, free_port
from settle.streams.local.processes import settings_env
from settle.streams.settings import EDITS, Settings
from settle.streams.simulate import SimulationConfig, simulate


async def peer(settings: Settings, lines: list[bytes]) -> float:
    """A connected producer sends every line keyed by its buffer (as `settle produce` does) and awaits every ack."""
    await ensure_topics(settings, (EDITS,))
    name = settings.topic(EDITS)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        await producer.partitions_for(name)  # connected and topic metadata known before the clock starts
        t0 = time.perf_counter()
        futures = [await producer.send(name, value=raw, key=key_of(raw)[0]) for raw in lines]
        await asyncio.gather(*futures)
        elapsed = time.perf_counter() - t0
    finally:
        await producer.stop()
    return len(lines) / elapsed


async def endpoint(base: str, lines: list[bytes], batch: int, concurrency: int,
                   zstd: bool) -> tuple[float, list[float]]:
    """Events/s of the posts, and each post's latency (send to 2xx, seconds)."""
    bodies = [b"\n".join(lines[i : i + batch]) for i in range(0, len(lines), batch)]
    headers = {"Authorization": "Bearer bench-token"}
    if zstd:
        cctx = zstandard.ZstdCompressor(level=3)
        bodies = [cctx.compress(b) for b in bodies]
        headers["Content-Encoding"] = "zstd"
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    accepted = 0
    latencies: list[float] = []

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal accepted
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            resp = await http.post("/v1/events", data=body, headers=headers)
            answer = await resp.json()
            latencies.append(time.perf_counter() - started)
            if resp.status != 200 or answer["rejected"]:
                raise SystemExit(f"post failed: {resp.status} {str(answer)[:300]}")
            accepted += answer["accepted"]

    async with aiohttp.ClientSession(base) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    assert accepted == len(lines), (accepted, len(lines))
    return len(lines) / elapsed, latencies


async def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(base) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit("settle ingest exited at startup")
            try:
                if (await http.get("/readyz")).status == 200:
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("settle ingest never became ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--batch", type=int, default=500, help="events per HTTP post")
    ap.add_argument("--concurrency", type=int, default=4, help="concurrent HTTP clients")
    ap.add_argument("--zstd", action="store_true", help="zstd-compress the posts")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs each")
    args = ap.parse_args()
    console = Console()

    lines = [encode(e) for e in simulate(SimulationConfig(sessions=args.sessions, seed=1)) if not isinstance(e, Tick)]
    console.print(f"{len(lines):,} events from {args.sessions} simulated sessions "
                  f"({sum(map(len, lines)) / len(lines):.0f} bytes each on average)")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker:
        base_settings = Settings(bootstrap=broker.bootstrap, partitions=4)
        port = free_port()
        env = {**os.environ, **settings_env(replace(base_settings, topic_prefix="bench-http.")),
               "SETTLE_INGEST_TOKENS": "bench:bench-token", "SETTLE_INGEST_RATE_PER_S": "0",
               "SETTLE_INGEST_PORT": str(port)}
        proc = subprocess.Popen([sys.executable, "-m", "settle.streams.cli", "ingest"], env=env,
                                stdout=open(Path(tmp) / "ingest.log", "wb"), stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(wait_ready(base, proc))
            peer_rates, http_rates = [], []
            for r in range(args.repeats):
                peer_rates.append(asyncio.run(peer(replace(base_settings, topic_prefix=f"bench-peer{r}."), lines)))
                rate, latencies = asyncio.run(endpoint(base, lines, args.batch, args.concurrency, args.zstd))
                if not http_rates or rate > max(http_rates):
                    best_latencies = sorted(latencies)
                http_rates.append(rate)
            on_topic = asyncio.run(read_topic(replace(base_settings, topic_prefix="bench-http."), EDITS, idle_s=2.0))
        finally:
            proc.terminate()
            proc.wait(10)
    assert len(on_topic) == len(lines) * args.repeats, (len(on_topic), len(lines) * args.repeats)

    table = Table(title=f"into `edits`, best of {args.repeats} (embedded broker, acks=all, 4 partitions)")
    table.add_column("path")
    table.add_column("events/s", justify="right")
    table.add_row("plain aiokafka producer (keyed, acks=all)", f"{max(peer_rates):,.0f}")
    label = f"settle ingest, {args.batch}/post, {args.concurrency} clients{', zstd' if args.zstd else ''}"
    table.add_row(label, f"{max(http_rates):,.0f}")
    console.print(table)
    console.print(f"ratio endpoint / plain producer: {max(http_rates) / max(peer_rates):.2f}")
    p50 = best_latencies[len(best_latencies) // 2]
    p99 = best_latencies[min(len(best_latencies) - 1, int(len(best_latencies) * 0.99))]
    console.print(f"post latency (send to 2xx), best run: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
                  f"over {len(best_latencies)} posts")
    console.print(f"all {len(on_topic):,} posted events are on the topic")


if __name__ == "__main__":
    main()
