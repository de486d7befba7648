"""Bench: does a student beat "not editing" on held-out regions, and what does the default band keep?

Held out: sessions simulated from source files the bootstrap never trained on (the bootstrap's
sessions come from the stdlib's top-level ``*.py`` files; the default here is the stdlib's
``asyncio/`` package, a different set of files), with a simulation seed the bootstrap did not
use. For every *changed* settled region (settled != original) it reports

* greedy: the share whose greedy prediction has normalised distance < 1 (closer to the settled
  text than the untouched region is), and the share that do not parse;
* sampled: the share whose median over k samples (the scorer's sampling settings) is < 1;
* the default band's decisions (``BandPolicy()``, adaptive k) over all settled examples,
  as ``settle score`` would make them.

    .venv/bin/python bench/heldout_student.py --sessions 20
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sysconfig
import time
from pathlib import Path

from settle.schemas.codecs import encode
from settle.schemas.examples import SettledExample
from settle.schemas.scored import BandPolicy
from settle.streams.contracts.sampling import SamplingConfig
from settle.streams.runtime.student import OnnxStudent
from settle.streams.scoring.distance import sample_distances
from settle.streams.scoring.score import ScoringConfig, score_batch
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate
from settle.trainer.evaluate.heldout import predict

DEFAULT_HELDOUT = Path(sysconfig.get_paths()["stdlib"]) / "asyncio"


def heldout_examples(sessions: int, seed: int, source_dir: Path) -> list[SettledExample]:
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=sessions, seed=seed, source_dir=source_dir))]
    return list(settle_records(enumerate(lines)).examples)


def measure(student_dir: Path, examples: list[SettledExample], *, k: int = 16, max_new_tokens: int = 128,
            batch: int = 16) -> dict[str, object]:
    changed = [e for e in examples if e.original_text != e.settled_text]
    student = OnnxStudent(student_dir)
    t = time.perf_counter()
    greedy = predict(student, changed, max_new_tokens=max_new_tokens)
    g_norm = []
    for e, p in zip(changed, greedy):
        if p is not None:
            d = sample_distances([p], e.original_text, e.settled_text)
            g_norm.append(d.normalised[0])
    t_greedy = time.perf_counter() - t
    t = time.perf_counter()
    sampling = SamplingConfig(max_new_tokens=max_new_tokens)
    # median mode with an unbounded band: no distance cap, so every distance is exact
    wide = BandPolicy(mode="median", keep_min_median=0.0, keep_max_median=1e9, k=k, round_size=k)
    full = ScoringConfig(policy=wide, sampling=sampling, adaptive=False)
    medians = []
    for i in range(0, len(changed), batch):
        for s in score_batch(changed[i:i + batch], student, full):
            if s.decision.samples_used:
                medians.append(s.decision.median if s.decision.median is not None else float("inf"))
    t_sampled = time.perf_counter() - t
    t = time.perf_counter()
    decisions: collections.Counter[str] = collections.Counter()
    default = ScoringConfig(sampling=sampling)
    for i in range(0, len(examples), batch):
        for s in score_batch(examples[i:i + batch], student, default):
            decisions[s.decision.decision] += 1
    t_band = time.perf_counter() - t
    n = len(changed)
    return {
        "student": str(student_dir),
        "settled": len(examples),
        "changed": n,
        "greedy_beats_not_editing": sum(x < 1 for x in g_norm) / n if n else 0.0,
        "greedy_parse_rate": len(g_norm) / n if n else 0.0,
        "greedy_median_normalised": statistics.median(g_norm) if g_norm else None,
        "sampled_median_beats_not_editing": sum(m < 1 for m in medians) / n if n else 0.0,
        "k": k,
        "default_band_decisions": dict(decisions),
        "seconds": {"greedy": round(t_greedy, 1), "sampled": round(t_sampled, 1), "band": round(t_band, 1)},
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", type=Path, default=None, help="model directory (default: the bootstrap student)")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--source-dir", type=Path, default=DEFAULT_HELDOUT)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--cache", type=Path, default=Path("var/cache"))
    a = ap.parse_args(argv)
    if a.student is None:
        from settle.trainer.student.bootstrap import bootstrap_student

        a.student = bootstrap_student(a.cache)
    result = measure(a.student, heldout_examples(a.sessions, a.seed, a.source_dir), k=a.k,
                     max_new_tokens=a.max_new_tokens)
    result["held_out"] = {"source_dir": str(a.source_dir), "sessions": a.sessions, "seed": a.seed}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
