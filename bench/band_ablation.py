"""Does the band help? Fine-tune the same student on four selections, several seeds each, and compare.

Training pool: changed settled examples of simulated sessions from the stdlib with labelled noise
(``SimulationConfig(noise_rate=NOISY_RATE)``: reverted edits, unrelated rewrites, abandoned typing,
pastes from elsewhere, formatter runs, deleted regions). The starting student (the bootstrap by
default) scores every pool example with all k samples and the default band thresholds
(``BandPolicy(k=K)``), which gives each example its decision and its solve share p. Arms:

1. ``kept band``: the examples the default band keeps;
2. ``all settled``: every changed example of the pool;
3. ``random subset``: a random subset of the pool as large as the kept band (a new draw per seed);
4. ``learnability p(1-p)``: the whole pool, each example drawn with weight p(1-p) (after LILO),
   as many draws as the pool has examples (examples with p in {0, 1} never drawn).

Every arm fine-tunes the same student for the same number of steps, once per seed (the fine-tune
seed, and the subset draw). Evaluation is on held-out *real-history* regions: ``settle simulate
--git`` of a repository the student never trained on (default: this repository), changed regions
only, greedy predictions: delta-chrF, Zed's kept rate, exact match, reversal ratio, parse rate.
It prints the mean and spread (sample standard deviation) per arm, every seed's row, and the
noise classes each selection let through.

    .venv/bin/python bench/band_ablation.py --sessions 40 --steps 40 --seeds 3
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from settle.schemas.codecs import encode
from settle.schemas.examples import SettledExample
from settle.schemas.scored import BandPolicy
from settle.streams.contracts.sampling import SamplingConfig
from settle.streams.runtime.student import OnnxStudent
from settle.streams.scoring.kept_rate import compute_kept_rate
from settle.streams.scoring.score import ScoringConfig, score_batch
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import CLEAN, NOISE_CLASSES, NOISY_RATE, SimulationConfig, generate
from settle.trainer.data.pairs import render, tokenize_pairs
from settle.trainer.evaluate.heldout import predict
from settle.trainer.evaluate.summary import row_from_example, summarize
from settle.trainer.finetune.config import FinetuneConfig
from settle.trainer.finetune.loop import finetune
from settle.trainer.student.bootstrap import bootstrap_student
from settle.trainer.student.build import load_tokenizer
from settle.trainer.student.export import export_onnx

ARMS = ("kept band", "all settled", "random subset", "learnability p(1-p)")


def git_heldout(repo: Path, max_commits: int, limit: int) -> list[SettledExample]:
    """Changed settled regions of ``settle simulate --git REPO`` (real history)."""
    from settle.streams.simulate.git_history import GitSimConfig, generate as git_generate

    sim = git_generate(GitSimConfig(repo=repo, max_commits=max_commits, suffixes=(".py",)))
    examples = settle_records(enumerate(encode(e) for e in sim.events)).examples
    changed = [e for e in examples if e.original_text != e.settled_text and len(e.settled_text) <= 2048
               and len(e.original_text) <= 2048]
    return random.Random(0).sample(changed, min(limit, len(changed)))


def evaluate_dir(model_dir: Path, held_out: list[SettledExample], max_new_tokens: int) -> dict[str, float]:
    predictions = predict(OnnxStudent(model_dir), held_out, max_new_tokens=max_new_tokens)
    s = summarize(row_from_example(e, p) for e, p in zip(held_out, predictions))
    kept = [compute_kept_rate(e.original_text, p if p is not None else e.original_text, e.settled_text).kept_rate
            for e, p in zip(held_out, predictions)]
    return {"delta_chrf": s.delta_chrf, "kept_rate": statistics.fmean(kept) if kept else 0.0,
            "exact_match": s.exact_match_rate, "reversal_ratio": s.reversal_ratio, "parse_rate": s.parse_rate}


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=40, help="simulated training-pool sessions (noisy)")
    ap.add_argument("--seed", type=int, default=300, help="simulation seed of the pool (not the bootstrap's)")
    ap.add_argument("--seeds", type=int, default=3, help="fine-tune seeds per arm")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--k", type=int, default=16, help="samples per pool example (all drawn: p needs them)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--max-tokens", type=int, default=768, help="training items keep their last this many tokens")
    ap.add_argument("--repo", type=Path, default=Path("."), help="held-out repository for simulate --git")
    ap.add_argument("--max-commits", type=int, default=40)
    ap.add_argument("--heldout", type=int, default=60, help="at most this many held-out regions")
    ap.add_argument("--student", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=Path("var/cache"))
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = ap.parse_args(argv)
    console = Console()
    t_start = time.perf_counter()

    student = a.student or bootstrap_student(a.cache)
    source = OnnxStudent(student)
    sim = generate(SimulationConfig(sessions=a.sessions, seed=a.seed, noise_rate=NOISY_RATE))
    pool = [e for e in settle_records(enumerate(encode(e) for e in sim.events)).examples
            if e.original_text != e.settled_text]
    held_out = git_heldout(a.repo.resolve(), a.max_commits, a.heldout)

    policy = BandPolicy(k=a.k, round_size=a.k)
    config = ScoringConfig(policy=policy, sampling=SamplingConfig(max_new_tokens=a.max_new_tokens), adaptive=False)
    scored = []
    t0 = time.perf_counter()
    for i in range(0, len(pool), 16):
        scored += score_batch(pool[i:i + 16], source, config)
    t_score = time.perf_counter() - t0
    p = {s.id: (s.decision.solve_rate or 0.0) for s in scored}
    decisions = collections.Counter(s.decision.decision for s in scored)
    kept = [s.example for s in scored if s.decision.decision == "keep"]
    weights = [p[e.id] * (1 - p[e.id]) for e in pool]
    console.print(
        f"pool: {len(pool)} changed settled examples ({a.sessions} noisy sessions), decisions {dict(decisions)}, "
        f"scored in {t_score:.0f} s; held out: {len(held_out)} changed regions of {a.repo.resolve().name}'s history"
    )

    def selection(arm: str, seed: int) -> list[SettledExample]:
        rng = random.Random(f"{a.seed}:{arm}:{seed}")
        if arm == "kept band":
            return kept
        if arm == "all settled":
            return pool
        if arm == "random subset":
            return rng.sample(pool, min(len(kept), len(pool)))
        if not any(weights):
            return []
        return rng.choices(pool, weights=weights, k=len(pool))

    tokenizer = load_tokenizer(student / "hf")
    base = evaluate_dir(student, held_out, a.max_new_tokens)
    results: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    noise: dict[str, collections.Counter[str]] = {}
    sizes: dict[str, int] = {}
    for arm in ARMS:
        for seed in range(a.seeds):
            data = selection(arm, seed)
            if seed == 0:
                noise[arm] = collections.Counter(sim.noise_class(e.request_id) for e in data)
                sizes[arm] = len(data)
            if not data:
                console.print(f"[yellow]{arm}: no examples, skipped")
                break
            items = tokenize_pairs([render(e) for e in data], tokenizer, a.max_tokens)
            ft = FinetuneConfig(steps=a.steps, batch_size=a.batch_size, warmup_steps=max(1, a.steps // 10), lr=a.lr,
                                min_lr=a.lr / 10, seed=seed)
            with tempfile.TemporaryDirectory() as tmp:
                result = finetune(student / "hf", list(items), Path(tmp) / "run", ft, resume=False, progress=False)
                export_onnx(result.model_dir, Path(tmp) / "onnx")
                row = evaluate_dir(Path(tmp) / "onnx", held_out, a.max_new_tokens)
            results[arm].append(row)
            console.print(f"{arm} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))

    metrics = ("delta_chrf", "kept_rate", "exact_match", "reversal_ratio", "parse_rate")
    table = Table(title=(
        f"band ablation: {a.steps} steps x batch {a.batch_size} per run at lr {a.lr:g}, {a.seeds} seeds per arm, "
        f"{len(held_out)} held-out real-history regions; mean ± sd over seeds"
    ))
    table.add_column("training set")
    table.add_column("examples", justify="right")
    for m in metrics:
        table.add_column(m, justify="right")
    table.add_row("starting student (no fine-tuning)", "-", *(f"{base[m]:.3f}" for m in metrics))
    for arm in ARMS:
        rows = results[arm]
        if not rows:
            table.add_row(arm, str(sizes.get(arm, 0)), *("-" for _ in metrics))
            continue

        def cell(m: str) -> str:
            values = [r[m] for r in rows]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.fmean(values):.3f} ± {sd:.3f}"

        table.add_row(arm, str(sizes[arm]), *(cell(m) for m in metrics))
    console.print(table)

    classes = (CLEAN, *NOISE_CLASSES)
    nt = Table(title="noise classes in each selection (seed 0; learnability: draws with replacement)")
    nt.add_column("training set")
    for c in classes:
        nt.add_column(c, justify="right")
    nt.add_column("noise share", justify="right")
    for arm in ARMS:
        counts = noise.get(arm, collections.Counter())
        total = sum(counts.values())
        share = f"{1 - counts[CLEAN] / total:.0%}" if total else "-"
        nt.add_row(arm, *(str(counts[c]) for c in classes), share)
    console.print(nt)
    console.print(f"total {time.perf_counter() - t_start:.0f} s")
    out = {"base": base, "results": results, "sizes": sizes, "noise": {k: dict(v) for k, v in noise.items()},
           "decisions": dict(decisions), "held_out": len(held_out), "args": {k: str(v) for k, v in vars(a).items()}}
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
