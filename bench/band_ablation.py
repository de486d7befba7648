"""Does the band help? Fine-tune the same student on three training sets and compare.

1. the kept band (what settle would train on),
2. all settled examples (no filter),
3. a random subset of all settled examples, as large as the kept band,

with the same steps, from the same starting student, evaluated on the same
held-out sessions. The student is the cached bootstrap student and the band is
calibrated to it (see `settle calibrate`), as in `make run`.

    python bench/band_ablation.py --sessions 60 --steps 80
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from settle.schemas.codecs import encode
from settle.schemas.scored import BandPolicy
from settle.streams.contracts.sampling import SamplingConfig
from settle.streams.runtime.student import OnnxStudent
from settle.streams.scoring.score import ScoringConfig, calibrate_band, score_batch
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate
from settle.trainer.data.pairs import render, tokenize_pairs
from settle.trainer.data.split import split
from settle.trainer.evaluate.heldout import evaluate
from settle.trainer.finetune.config import FinetuneConfig
from settle.trainer.finetune.loop import finetune
from settle.trainer.student.bootstrap import bootstrap_student
from settle.trainer.student.build import load_tokenizer
from settle.trainer.student.export import export_onnx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=60)
    ap.add_argument("--seed", type=int, default=300)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--cache", type=Path, default=Path("var/cache"))
    args = ap.parse_args()
    console = Console()

    student = bootstrap_student(args.cache)
    source = OnnxStudent(student)
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=args.sessions, seed=args.seed))]
    examples = settle_records(enumerate(lines)).examples
    train, held_out = split(examples, 0.25)
    held_out = [e for e in held_out if e.original_text != e.settled_text]
    calibration = settle_records(enumerate(encode(e) for e in simulate(SimulationConfig(sessions=8, seed=77)))).examples
    policy = calibrate_band(calibration, source, BandPolicy(mode="median", k=args.k), 0.25, 0.75, args.max_new_tokens)

    t0 = time.perf_counter()
    scored = []
    for i in range(0, len(train), 16):
        scored += score_batch(train[i : i + 16], source, ScoringConfig(policy=policy, sampling=SamplingConfig(max_new_tokens=args.max_new_tokens)))
    kept = [s.example for s in scored if s.decision.decision == "keep"]
    changed = [e for e in train if e.original_text != e.settled_text]
    subset = random.Random(args.seed).sample(changed, min(len(kept), len(changed)))
    console.print(
        f"{len(examples)} settled examples: {len(train)} train-side ({len(changed)} changed), "
        f"{len(held_out)} held-out; kept band {len(kept)} "
        f"[{policy.keep_min_median:.2f}, {policy.keep_max_median:.2f}]; scoring took {time.perf_counter() - t0:.0f} s"
    )

    tokenizer = load_tokenizer(student / "hf")
    config = FinetuneConfig(steps=args.steps, batch_size=8, warmup_steps=max(1, args.steps // 10), lr=args.lr,
                            min_lr=args.lr / 10)
    rows = [("bootstrap student (no fine-tuning)", 0, evaluate(student, held_out, max_new_tokens=args.max_new_tokens))]
    for label, data in (("kept band", kept), ("all settled", train), ("random subset, kept-band size", subset)):
        if not data:
            console.print(f"[yellow]{label}: no examples, skipped")
            continue
        items = tokenize_pairs([render(e) for e in data], tokenizer, 1024)
        with tempfile.TemporaryDirectory() as tmp:
            result = finetune(student / "hf", list(items), Path(tmp) / "run", config, resume=False, progress=False)
            export_onnx(result.model_dir, Path(tmp) / "onnx")
            rows.append((label, len(items), evaluate(Path(tmp) / "onnx", held_out, max_new_tokens=args.max_new_tokens)))

    table = Table(title=f"band ablation: {args.steps} steps each at lr {args.lr:g}, "
                        f"{len(held_out)} held-out examples (changed regions)")
    for col in ("training set", "examples", "delta-chrF", "reversal ratio", "exact match", "parse rate"):
        table.add_column(col, justify="right" if col != "training set" else "left")
    for label, n, s in rows:
        table.add_row(label, str(n), f"{s.delta_chrf:.2f}", f"{s.reversal_ratio:.3f}", f"{s.exact_match_rate:.3f}",
                      f"{s.parse_rate:.3f}")
    console.print(table)


if __name__ == "__main__":
    main()
