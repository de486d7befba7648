"""Bench: samples per example with adaptive k against full k, on the same examples.

``score_batch`` draws an example's samples in rounds of ``round_size`` from the seed
(example id, round), and with adaptive k it stops drawing once no remaining sample can
change the band decision (``streams/scoring/band.py``: exact, not a statistical test).
Full k draws the very same rounds and never stops early. So both runs see identical
samples for every round adaptive k drew, and their decisions must be identical: this
bench asserts it, example by example, and prints how many samples each used.

Default: the default band (``BandPolicy()``: solve-rate mode, k=16, rounds of 4) and the
cached bootstrap student, on changed settled examples of a simulation the bootstrap did
not train on. ``--policy band.json`` scores with another band (for example a calibrated
one) to show what adaptive k saves when the band has a middle.

    .venv/bin/python bench/adaptive_k.py --sessions 12
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from settle.schemas.codecs import encode
from settle.schemas.examples import SettledExample
from settle.schemas.scored import BandPolicy
from settle.streams.contracts.sampling import SamplingConfig
from settle.streams.runtime.student import OnnxStudent
from settle.streams.scoring.score import ScoringConfig, score_batch
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate
from settle.trainer.student.bootstrap import bootstrap_student


def _examples(sessions: int, seed: int) -> list[SettledExample]:
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=sessions, seed=seed))]
    return list(settle_records(enumerate(lines)).examples)


def _score(student: Path, examples: list[SettledExample], config: ScoringConfig, batch: int):  # type: ignore[no-untyped-def]
    source = OnnxStudent(student)
    out = []
    t = time.perf_counter()
    for i in range(0, len(examples), batch):
        out += score_batch(examples[i:i + batch], source, config)
    return out, time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=12)
    ap.add_argument("--seed", type=int, default=900, help="simulation seed (not the bootstrap's)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many settled examples (0 = all)")
    ap.add_argument("--batch", type=int, default=16, help="examples per score_batch call")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--policy", type=Path, default=None, help="band policy JSON (default: BandPolicy())")
    ap.add_argument("--cache", type=Path, default=Path("var/cache"))
    ap.add_argument("--student", type=Path, default=None, help="model directory (default: the bootstrap student)")
    a = ap.parse_args(argv)

    policy = msgspec.json.decode(a.policy.read_bytes(), type=BandPolicy) if a.policy else BandPolicy()
    student = a.student or bootstrap_student(a.cache)
    examples = _examples(a.sessions, a.seed)
    if a.limit:
        examples = examples[: a.limit]
    sampling = SamplingConfig(max_new_tokens=a.max_new_tokens)
    adaptive, t_adaptive = _score(student, examples, ScoringConfig(policy=policy, sampling=sampling, adaptive=True), a.batch)
    full, t_full = _score(student, examples, ScoringConfig(policy=policy, sampling=sampling, adaptive=False), a.batch)

    same = sum(x.decision.decision == y.decision.decision for x, y in zip(adaptive, full, strict=True))
    sampled = [(x, y) for x, y in zip(adaptive, full) if y.decision.samples_used]
    # The samples adaptive k drew are a prefix of full k's (same seeds, same rounds).
    prefix = sum(x.normalised == y.normalised[: len(x.normalised)] for x, y in sampled)
    by_decision: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for x, y in sampled:
        by_decision[y.decision.decision].append((x.decision.samples_used, y.decision.samples_used))
    screened = collections.Counter(y.decision.decision for y in full if not y.decision.samples_used)

    table = Table(title=(
        f"adaptive k vs full k: {len(examples)} settled examples ({len(sampled)} sampled, screened: "
        f"{dict(screened) or 'none'}), band {policy.mode} k={policy.k} rounds of {policy.round_size}, "
        f"student {student.name}"
    ))
    for col in ("decision", "examples", "mean samples adaptive", "mean samples full", "saved"):
        table.add_column(col, justify="left" if col == "decision" else "right")

    def row(name: str, pairs: list[tuple[int, int]]) -> None:
        ad = statistics.fmean(p[0] for p in pairs)
        fu = statistics.fmean(p[1] for p in pairs)
        table.add_row(name, str(len(pairs)), f"{ad:.2f}", f"{fu:.2f}", f"{1 - ad / fu:.0%}")

    for name in ("too_easy", "keep", "too_hard"):
        if by_decision.get(name):
            row(name, by_decision[name])
    all_pairs = [p for v in by_decision.values() for p in v]
    if all_pairs:
        row("all sampled", all_pairs)
    console = Console()
    console.print(table)
    console.print(
        f"decisions identical: {same}/{len(examples)}; adaptive samples a prefix of full k's: "
        f"{prefix}/{len(sampled)}; wall: adaptive {t_adaptive:.1f} s, full {t_full:.1f} s"
    )
    assert same == len(examples), f"adaptive k changed {len(examples) - same} decisions"
    assert prefix == len(sampled), f"{len(sampled) - prefix} examples drew different samples"
    return {
        "examples": len(examples), "sampled": len(sampled), "identical": same,
        "mean_adaptive": statistics.fmean(p[0] for p in all_pairs) if all_pairs else 0.0,
        "mean_full": statistics.fmean(p[1] for p in all_pairs) if all_pairs else 0.0,
        "decisions": {k: len(v) for k, v in by_decision.items()},
    }


if __name__ == "__main__":
    main()
