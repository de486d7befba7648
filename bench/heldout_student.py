"""Bench: does a student beat "not editing" on held-out regions, and what does the default band keep?

Held out: sessions simulated from source files the bootstrap never trained on (the bootstrap's
sessions come from the stdlib's top-level ``*.py`` files; the default here is the stdlib's
``asyncio/`` package, a different set of files), with a simulation seed the bootstrap did not
use. For every *changed* settled region (settled != original) it reports

* greedy: the share whose greedy prediction has normalised distance < 1 (closer to the settled
  text than the untouched region is), and the share that do not parse;
* sampled: the share whose median over k samples (the scorer's sampling settings) is < 1;
* the default band's decisions (``BandPolicy()``, adaptive k) over all settled examples,
  as ``settle score`` would make them;
* why the band keeps what it keeps: the best of the k samples (its normalised distance) by the
  user's edit size, and, with no model at all, what a constant insertion at the cursor scores
  (``"self."`` beats "not editing" on almost every long insertion: the "< 1" bar is low) and how
  many regions an oracle that types only the first line of the insertion exactly would solve
  (``<= solve_threshold``): the part of the task within reach of a line completer.

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
from settle.streams.contracts.prompt import inserted_at_cursor
from settle.streams.contracts.sampling import SamplingConfig
from settle.streams.runtime.student import OnnxStudent
from settle.streams.scoring.distance import sample_distances
from settle.streams.scoring.score import ScoringConfig, score_batch
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate
from settle.trainer.evaluate.heldout import predict
from settle.trainer.student.bootstrap import first_line_of_insertion

#: (low, high) user edit sizes in characters, both inclusive, for the by-size table
EDIT_BINS = ((1, 10), (11, 25), (26, 60), (61, 150), (151, 10**9))
CONSTANTS = ("self.", "e")


def _quantiles(values: list[float], qs: tuple[float, ...] = (0.1, 0.5, 0.9)) -> list[float]:
    v = sorted(values)
    return [v[min(len(v) - 1, round(q * (len(v) - 1)))] for q in qs] if v else []


def baselines(changed: list[SettledExample], solve_threshold: float) -> dict[str, object]:
    """No model: constant insertions at the cursor, and the first-line oracle."""
    def nd(e: SettledExample, text: str) -> float:
        return sample_distances([text], e.original_text, e.settled_text).normalised[0]

    out: dict[str, object] = {}
    for c in CONSTANTS:
        below = sum(nd(e, e.original_text[:e.cursor] + c + e.original_text[e.cursor:]) < 1 for e in changed)
        out[f"constant {c!r} beats not editing"] = below / len(changed) if changed else 0.0
    solved = []
    for e in changed:
        inserted = inserted_at_cursor(e)
        if inserted is None:
            solved.append(False)
            continue
        first = first_line_of_insertion(inserted) or inserted
        solved.append(nd(e, e.original_text[:e.cursor] + first + e.original_text[e.cursor:]) <= solve_threshold)
    out["first-line oracle solves"] = sum(solved) / len(changed) if changed else 0.0
    return out

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
    by_size: dict[tuple[int, int], list[tuple[float, int]]] = {b: [] for b in EDIT_BINS}
    for i in range(0, len(changed), batch):
        for s in score_batch(changed[i:i + batch], student, full):
            if s.decision.samples_used:
                medians.append(s.decision.median if s.decision.median is not None else float("inf"))
                finite = [x for x in s.normalised if x is not None]
                best = min(finite, default=float("inf"))
                solving = sum(x <= BandPolicy().solve_threshold for x in finite)
                for lo, hi in EDIT_BINS:
                    if lo <= s.user_edit_distance <= hi:
                        by_size[(lo, hi)].append((best, solving))
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
        "best_of_k_by_edit_size": {
            f"{lo}-{hi if hi < 10**9 else ''}": {
                "regions": len(v),
                "best_normalised_q10_q50_q90": [round(x, 3) for x in _quantiles([b for b, _ in v])],
                "regions_with_a_solving_sample": sum(n > 0 for _, n in v),
                "regions_with_2_or_more": sum(n >= 2 for _, n in v),
            } for (lo, hi), v in by_size.items()
        },
        "best_of_k_q10_q50_q90": [round(x, 3) for x in _quantiles([b for v in by_size.values() for b, _ in v])],
        "no_model": baselines(changed, BandPolicy().solve_threshold),
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
