"""Rank 0's record of a run: one JSON line per step (and per eval) in ``train_log.jsonl``, plus a progress bar.

Its own module because a resumed run must rewrite the log after its checkpoint (drop what the crashed
run logged past it), and every other rank must write nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from settle.trainer.finetune.config import LOG_FILE


class RunLog:
    """Rank 0's JSONL log plus a rich progress bar; a no-op on other ranks."""

    def __init__(self, out_dir: Path, main: bool, progress: bool, start: int, total: int):
        self.main = main
        self.path = out_dir / LOG_FILE
        self.bar = None
        if not main:
            return
        # A resumed run rewrites the steps after its checkpoint: drop what the crashed run logged past it.
        if self.path.exists():
            kept = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln)["step"] <= start]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        self.file = open(self.path, "a")
        if progress:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("finetune"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            )
            self.task = self.bar.add_task("steps", total=total, completed=start, info="")
            self.bar.start()

    def write(self, record: dict, advance: bool = False) -> None:
        if not self.main:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.bar is not None:
            info = " ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step" and isinstance(v, float))
            self.bar.update(self.task, advance=1 if advance else 0, info=info)

    def close(self) -> None:
        if self.main:
            self.file.close()
            if self.bar is not None:
                self.bar.stop()
