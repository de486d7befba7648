"""`settle run`: the whole pipeline on one machine, with nothing installed but this package.

Starts the embedded broker and a worker process, feeds simulated telemetry,
watches settled examples arrive, and checks them against the offline
reference, so a newcomer sees the contract hold, not just records flow.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from settle.schemas.codecs import decode_settled

from .broker import EmbeddedBroker
from .kafka_io import iter_topic, produce_lines, read_topic
from .offline import settle_records
from .processes import WorkerProcess
from .settings import DEAD_LETTER, SETTLED, Settings
from .simulate import SimulationConfig, simulate, write_jsonl
from .topics import ensure_topics_sync


def run_demo(sessions: int, seed: int, port: int, work_dir: Path, timeout_s: float = 180.0) -> None:
    console = Console()
    work_dir.mkdir(parents=True, exist_ok=True)
    telemetry = work_dir / "telemetry.jsonl"
    write_jsonl(simulate(SimulationConfig(sessions=sessions, seed=seed)), telemetry)
    lines = [line for line in telemetry.read_bytes().splitlines() if line.strip()]
    reference = settle_records(enumerate(lines, 1), Settings.from_env().tracker)
    expected = {e.id: e for e in reference.examples}
    console.print(
        f"simulated {len(lines)} events from {sessions} sessions -> {telemetry}; "
        f"offline reference settles {len(expected)} examples"
    )

    with EmbeddedBroker(port=port, log_path=work_dir / "broker.log") as broker:
        settings = Settings.from_env(bootstrap=broker.bootstrap, data_dir=work_dir / "worker")
        ensure_topics_sync(settings)
        console.print(f"embedded broker at {broker.bootstrap}; starting a settle worker")
        worker = WorkerProcess(settings, work_dir / "worker.log").start()
        try:
            asyncio.run(produce_lines(settings, lines))
            got = asyncio.run(_watch(settings, set(expected), worker, timeout_s))
            dead = asyncio.run(read_topic(settings, DEAD_LETTER, idle_s=1.0))
        finally:
            worker.stop()

    _report(console, expected, got, len(dead), work_dir)
    if set(got) != set(expected) or any(got[i] != expected[i] for i in expected if i in got):
        raise RuntimeError(f"settled topic differs from the offline reference; see {work_dir}/worker.log")


async def _watch(settings: Settings, expected: set[str], worker: WorkerProcess, timeout_s: float) -> dict:
    got: dict = {}
    deadline = time.monotonic() + timeout_s
    columns = (TextColumn("settled examples"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("settled", total=len(expected))
        while set(got) < expected or not expected:
            if time.monotonic() > deadline:
                break
            if not worker.alive:
                raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
            async for record in iter_topic(settings, SETTLED, idle_s=2.0, max_s=10.0):
                example = decode_settled(record.value)
                got[example.id] = example
                progress.update(task, completed=len(set(got) & expected))
            if not expected:
                break
    return got


def _report(console: Console, expected: dict, got: dict, dead: int, work_dir: Path) -> None:
    table = Table(title="settled examples (first 8)")
    for col in ("path", "origin of edits", "original chars", "settled chars", "settled after (s)"):
        table.add_column(col)
    for example in list(got.values())[:8]:
        origins = ", ".join(f"{k}×{v}" for k, v in sorted(example.edit_origins.items()))
        table.add_row(
            example.path.split("/")[-1],
            origins or "-",
            str(len(example.original_text)),
            str(len(example.settled_text)),
            f"{(example.settled_at_ms - example.requested_at_ms) / 1000:.1f}",
        )
    console.print(table)
    same = set(got) == set(expected) and all(got[i] == expected[i] for i in expected)
    console.print(
        f"topic `settled`: {len(got)} distinct examples; offline reference: {len(expected)}; "
        f"identical: [bold]{'yes' if same else 'NO'}[/]; dead letters: {dead}; logs in {work_dir}"
    )
