"""Bench: scoring settled examples with the ONNX sampler vs with Hugging Face ``generate``.

The scorer's real workload: simulated settled examples, the cached bootstrap student, the
student's own stop tokens (samples end at ``<|editable_region_end|>`` at scattered lengths), k
samples per example, adaptive k off so that every source draws exactly k samples per example.
Sources, on the same examples in the same run:

1. the ONNX sampler (shared prompt cache, finished rows dropped from the batch; batch-invariant
   on CPU: one graph run per example per step, no padding),
2. the same sampler with dropping off,
3. the same sampler with one padded run for the whole batch (``padded``: not batch-invariant;
   what the sampler did before, and still does on CUDA),
4. ``generate(do_sample=True, num_return_sequences=k)`` with the same stop tokens, temperature,
   top-k and top-p (transformers keeps a finished row in the batch until all rows finish).

Draws differ between the sampler and ``generate`` (different random streams), so sampled token
counts are printed next to the times.

    .venv/bin/python bench/scoring.py --sessions 12 --k 16
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from settle.schemas.codecs import encode
from settle.schemas.examples import SettledExample
from settle.schemas.scored import BandPolicy
from settle.streams.contracts.sampling import SamplingConfig
from settle.streams.runtime.student import OnnxStudent
from settle.streams.scoring.score import Draw, ScoringConfig, score_batch
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate
from settle.trainer.student.bootstrap import bootstrap_student


class HFSource:
    """The scorer's SampleSource over ``transformers`` ``generate`` (the peer)."""

    def __init__(self, model_dir: Path, onnx_student: OnnxStudent, per_call: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.student = onnx_student  # same prompt truncation and draw decoding as the sampler's source
        self.stop_ids = list(onnx_student.sampler.stop_token_ids)
        self.pad = onnx_student.sampler.pad_token_id
        self.model_name, self.model_version = "hf-generate", onnx_student.model_version
        self.batch_invariant = False  # padded batches
        self.sampled_tokens = 0
        self.per_call = per_call  # prompts per generate call (left-padded together)

    def draw(
        self, prompts: Sequence[str], n: int, seeds: Sequence[int], *, temperature: float, top_p: float,
        max_new_tokens: int, top_k: int = 0,
    ) -> list[list[Draw]]:
        out: list[list[Draw]] = []
        for i in range(0, len(prompts), self.per_call):
            out += self._generate(prompts[i:i + self.per_call], n, seeds[i], temperature, top_p, max_new_tokens, top_k)
        return out

    def _generate(  # type: ignore[no-untyped-def]
        self, prompts, n: int, seed: int, temperature: float, top_p: float, max_new_tokens: int, top_k: int
    ) -> list[list[Draw]]:
        torch = self.torch
        ids = [self.student.encode_prompt(p) for p in prompts]
        width = max(map(len, ids))
        batch = torch.tensor([[self.pad] * (width - len(x)) + x for x in ids])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(
                batch, attention_mask=mask, do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k,
                num_return_sequences=n, max_new_tokens=max_new_tokens, eos_token_id=self.stop_ids,
                pad_token_id=self.pad,
            )
        result: list[list[Draw]] = []
        for i in range(len(prompts)):
            draws = []
            for row in out[i * n:(i + 1) * n, width:].tolist():
                stop = next((j for j, t in enumerate(row) if t in self.stop_ids), None)
                toks = row if stop is None else row[:stop]
                self.sampled_tokens += len(toks) + (stop is not None)  # the stop token was sampled too
                draws.append(self.student.to_draw(toks, None if stop is None else row[stop]))
            result.append(draws)
        return result


def _examples(sessions: int, seed: int) -> list[SettledExample]:
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=sessions, seed=seed))]
    return [e for e in settle_records(enumerate(lines)).examples if e.original_text != e.settled_text]


def _run(source, examples: list[SettledExample], config: ScoringConfig, batch: int) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    for i in range(0, len(examples), batch):
        score_batch(examples[i:i + batch], source, config)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=12)
    ap.add_argument("--seed", type=int, default=900, help="simulation seed (not the bootstrap's)")
    ap.add_argument("--limit", type=int, default=64, help="at most this many changed examples")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16, help="examples per score_batch call")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--cache", type=Path, default=Path("var/cache"))
    ap.add_argument("--student", type=Path, default=None, help="model directory (default: the cached bootstrap)")
    ap.add_argument("--engines", default="compact,full,padded,hf", help="comma list of compact, full, padded, hf")
    ap.add_argument("--peer-batch", type=int, default=1, help="prompts per HF generate call (padded together)")
    a = ap.parse_args(argv)

    student = a.student or bootstrap_student(a.cache)
    examples = _examples(a.sessions, a.seed)[: a.limit]
    config = ScoringConfig(policy=BandPolicy(k=a.k, round_size=a.k), sampling=SamplingConfig(max_new_tokens=a.max_new_tokens),
                           adaptive=False)
    engines = [e.strip() for e in a.engines.split(",")]
    rows: dict[str, tuple[float, int, str]] = {}
    for engine in engines:
        onnx = OnnxStudent(student)
        if engine in ("compact", "full", "padded"):
            onnx.sampler.compact = engine != "full"
            onnx.sampler.batch_invariant = engine != "padded"
            seconds = _run(onnx, examples, config, a.batch)
            st = onnx.sampler.stats
            how = "drops finished rows" if onnx.sampler.compact else "keeps them"
            how += ", a run per example" if onnx.sampler.batch_invariant else ", one padded run per batch"
            rows[f"ONNX sampler ({how})"] = (
                seconds, st.sampled_tokens, f"{st.row_steps} row-steps, {st.decode_runs} runs, {st.compactions} drops")
        elif engine == "hf":
            hf = HFSource(student / "hf", onnx, a.peer_batch)
            seconds = _run(hf, examples, config, a.batch)
            rows["HF generate"] = (seconds, hf.sampled_tokens, f"{a.peer_batch} prompt(s) per call")
        else:
            raise SystemExit(f"unknown engine {engine!r}")

    table = Table(title=(
        f"scoring {len(examples)} settled examples, k={a.k} (adaptive off), {a.batch} per batch, "
        f"<= {a.max_new_tokens} new tokens, T={config.sampling.temperature} top_k={config.sampling.top_k} top_p={config.sampling.top_p}"
    ))
    for col in ("source", "wall s", "examples/s", "samples/s", "sampled tokens", "vs HF generate", "notes"):
        table.add_column(col, justify="left" if col in ("source", "notes") else "right")
    hf_s = rows.get("HF generate", (None,))[0]
    for name, (seconds, tokens, note) in rows.items():
        ratio = f"{hf_s / seconds:.2f}x" if hf_s else "-"
        table.add_row(name, f"{seconds:.2f}", f"{len(examples) / seconds:.2f}", f"{len(examples) * a.k / seconds:.1f}",
                      str(tokens), ratio, note)
    Console().print(table)


if __name__ == "__main__":
    main()
