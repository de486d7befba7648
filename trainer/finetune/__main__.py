"""Fine-tune the student from the command line: ``python -m settle.trainer.finetune`` (or under ``torchrun``).

Its own module so the loop stays a library: this only parses flags (one per ``FinetuneConfig`` field),
reads tokenized items from JSONL (``input_ids`` and ``labels`` per line) and prints rank 0's summary.

``torchrun --nproc_per_node=N -m settle.trainer.finetune --model DIR --data items.jsonl --out DIR [--steps N ...]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from settle.schemas.jsonl import read_lines
from settle.trainer.finetune.config import FinetuneConfig
from settle.trainer.finetune.loop import finetune


def read_items(path: Path) -> list[dict]:
    """Items from JSONL: one object per line with ``input_ids`` and ``labels`` (other keys ignored).

    Lines come from the one JSONL reader (``settle.schemas.jsonl.read_lines``: blank lines skipped).
    """
    objects = (json.loads(raw) for _, raw in read_lines(path))
    return [{"input_ids": o["input_ids"], "labels": o["labels"]} for o in objects if o]


def config_args(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(FinetuneConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif f.name == "lora_target_modules":
            parser.add_argument(flag, nargs="+", default=list(f.default))
        elif f.name == "max_tokens":
            parser.add_argument(flag, type=int, default=f.default, help="0 = no limit")
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m settle.trainer.finetune", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True, help="student directory (transformers format)")
    p.add_argument("--data", type=Path, required=True, help="training items, JSONL with input_ids/labels")
    p.add_argument("--out", type=Path, required=True, help="run directory: checkpoints/, model/, train_log.jsonl")
    p.add_argument("--eval-data", type=Path, help="evaluation items, JSONL")
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming from out/checkpoints")
    p.add_argument("--no-progress", action="store_true")
    config_args(p)
    a = p.parse_args(argv)
    # Under torchrun, grad_accum must be a multiple of the world size: default to one micro-batch per rank.
    world = int(os.environ.get("WORLD_SIZE", 1))
    if "--grad-accum" not in (argv if argv is not None else sys.argv[1:]):
        a.grad_accum = max(a.grad_accum, world)
    values = {f.name: getattr(a, f.name) for f in dataclasses.fields(FinetuneConfig)}
    values["lora_target_modules"] = tuple(values["lora_target_modules"])
    values["max_tokens"] = values["max_tokens"] or None
    config = FinetuneConfig(**values)
    result = finetune(
        a.model, read_items(a.data), a.out, config,
        eval_items=read_items(a.eval_data) if a.eval_data else None,
        resume=not a.no_resume, progress=not a.no_progress,
    )
    if int(os.environ.get("RANK", 0)) == 0:
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(result).items()}
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
