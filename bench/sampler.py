"""Bench: ONNX Runtime sampler vs Hugging Face ``generate`` on the same model and prompts.

Both draw k samples per example with the same temperature/top-k/top-p and exactly
``--new-tokens`` tokens per sample (stop tokens off, ``min_new_tokens`` = ``max_new_tokens``), so
the work is equal; HF repeats each prompt k times before its prefill and carries k copies of its
cache, the sampler prefills it once and its k rows share that cache.

  .venv/bin/python bench/sampler.py --shape tiny --k 8 --prompt-tokens 256 --new-tokens 32 --examples 4
  python bench/sampler.py --shape qwen2.5-0.5b --device cuda --dtype fp16 \
      --examples 64 --batch-examples 32 --peer-examples 4                  # GPU machine

On cuda nothing silently falls back to the CPU: HF runs on the GPU and the sampler must get
ONNX Runtime's CUDA provider (onnxruntime-gpu), which turns on I/O binding.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="ONNX sampler vs HF generate throughput")
    p.add_argument("--shape", default="tiny", help="tiny | small | qwen2.5-0.5b")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--prompt-tokens", type=int, default=1500)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--examples", type=int, default=4)
    p.add_argument("--batch-examples", type=int, default=1)
    p.add_argument("--peer-examples", type=int, default=0,
                   help="HF generate runs only the first N examples (0: all); rates are per example")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=50, help="0: the whole vocabulary")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for both (0: defaults)")
    p.add_argument("--engines", default="hf,ort", help="comma list of hf, ort, ort-padded (one padded run "
                   "per batch: not batch-invariant, the CUDA default)")
    p.add_argument("--workdir", default=None, help="keep model + export here (reused if present)")
    return p.parse_args(argv)


def _prepare(a: argparse.Namespace, work: Path) -> tuple[Path, Path, str]:
    """Build the random-weight student and its ONNX export (reused when already there)."""
    from settle.trainer.student.build import build_student
    from settle.trainer.student.export import export_onnx

    weights = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[a.dtype]
    model_dir = work / f"model-{a.shape}-{a.dtype}"
    if not (model_dir / "config.json").exists():
        # Small tokenizer corpus: the bench feeds token ids, the tokenizer only needs to exist.
        build_student(model_dir, shape=a.shape, seed=a.seed, max_files=40, dtype=weights)
    # ONNX Runtime's bf16 coverage is thin: a bf16 run serves ORT an fp16 graph (noted in output).
    ort_dtype = "fp16" if a.dtype == "bf16" else a.dtype
    onnx_dir = work / f"onnx-{a.shape}-{a.dtype}"
    if not (onnx_dir / "model.onnx").exists():
        t = time.perf_counter()
        export_onnx(model_dir, onnx_dir, dtype=ort_dtype, device=a.device)
        print(f"exported {onnx_dir} in {time.perf_counter() - t:.1f}s")
    return model_dir, onnx_dir, ort_dtype


def _prompts(a: argparse.Namespace, vocab: int, n_special: int) -> np.ndarray:
    rng = np.random.default_rng(a.seed)
    return rng.integers(n_special, vocab, size=(a.examples, a.prompt_tokens), dtype=np.int64)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def run_hf(a: argparse.Namespace, model_dir: Path, prompts: np.ndarray) -> float:
    """Seconds for HF ``generate`` over all examples, ``--batch-examples`` per call."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(a.device).eval()
    kw = dict(
        do_sample=True, temperature=a.temperature, top_p=a.top_p, top_k=a.top_k,
        num_return_sequences=a.k, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
        pad_token_id=model.config.pad_token_id,
    )

    def gen(batch: np.ndarray, n_new: int) -> None:
        ids = torch.from_numpy(batch).to(a.device)
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), **{**kw, "max_new_tokens": n_new,
                                                          "min_new_tokens": n_new}
        )
        assert out.shape == (len(batch) * a.k, batch.shape[1] + n_new)

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    with torch.inference_mode():
        gen(prompts[:1, :16], 2)  # warm-up: kernels, allocator
        _sync(a.device)
        t = time.perf_counter()
        for i in range(0, len(prompts), a.batch_examples):
            gen(prompts[i:i + a.batch_examples], a.new_tokens)
        _sync(a.device)
        return time.perf_counter() - t


def run_ort(a: argparse.Namespace, onnx_dir: Path, prompts: np.ndarray, batch_invariant: bool | None = None
            ) -> tuple[float, str]:
    """Seconds for the ONNX sampler over the same examples; also says which provider ran.
    ``batch_invariant``: the sampler's default (None: a run per example on CPU), or forced."""
    import onnxruntime as ort

    from settle.streams.runtime.sampler import Sampler

    opts = ort.SessionOptions()
    if a.threads:
        opts.intra_op_num_threads = a.threads
    providers = None if a.device == "cuda" else ["CPUExecutionProvider"]  # None: CUDA if built
    sampler = Sampler(onnx_dir, providers=providers, session_options=opts, prefill_cache_size=0,
                      batch_invariant=batch_invariant)
    used = sampler.session.get_providers()[0]
    if a.device == "cuda" and used != "CUDAExecutionProvider":
        raise SystemExit("ONNX Runtime has no CUDA provider here: install onnxruntime-gpu")
    sampler.sample([prompts[0, :16].tolist()], a.k, 2, stop_token_ids=[], top_k=a.top_k)  # warm-up
    sampler.stats.__init__()
    t = time.perf_counter()
    for i in range(0, len(prompts), a.batch_examples):
        batch = [p.tolist() for p in prompts[i:i + a.batch_examples]]
        sampler.sample(batch, a.k, a.new_tokens, a.temperature, a.top_p, a.seed + i, stop_token_ids=[],
                       top_k=a.top_k)
    dt = time.perf_counter() - t
    st = sampler.stats
    expected = len(prompts) * a.k * a.new_tokens
    assert st.sampled_tokens == expected, (st, expected)
    where = f"{used}{' + I/O binding' if sampler.io_binding else ''}"
    how = "batch-invariant: a run per example" if sampler.batch_invariant else "one padded run per batch"
    return dt, (
        f"{where}, {how}; prefill {st.prefill_s:.2f}s ({st.prefill_runs} runs), decode graph "
        f"{st.decode_s:.2f}s ({st.decode_steps} steps, {st.decode_runs} runs), numpy sampling {st.sample_s:.2f}s"
    )


def _report(a: argparse.Namespace, times: dict[str, tuple[float, int]], notes: list[str]) -> None:
    """``times``: engine -> (seconds, examples it ran). Rates are per example, so a peer that ran
    fewer examples (``--peer-examples``) is still compared on the same work per example."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=(
        f"{a.shape} {a.dtype} on {a.device}: k={a.k}, prompt {a.prompt_tokens} tok, "
        f"{a.new_tokens} new tok, {a.batch_examples} example(s)/call, T={a.temperature} "
        f"top_k={a.top_k} top_p={a.top_p}"
    ))
    table.add_column("metric")
    for name in times:
        table.add_column(name, justify="right")
    both = "HF generate" in times and "ONNX sampler" in times
    if both:
        table.add_column("ONNX speedup", justify="right")
    per_example = {name: s / n for name, (s, n) in times.items()}
    rows = [
        ("examples run", lambda name: str(times[name][1]), None),
        ("wall s", lambda name: f"{times[name][0]:.2f}", None),
        ("examples/s", lambda name: f"{1 / per_example[name]:.3f}", True),
        ("sampled tokens/s", lambda name: f"{a.k * a.new_tokens / per_example[name]:.1f}", True),
    ]
    for label, cell, ratio in rows:
        cells = [cell(name) for name in times]
        if both:  # the same work per example on both sides, so every rate row has the same ratio
            cells.append(f"{per_example['HF generate'] / per_example['ONNX sampler']:.2f}x" if ratio else "")
        table.add_row(label, *cells)
    Console().print(table)
    if "HF generate" in times and "ONNX sampler, padded" in times:
        print(f"ONNX sampler, padded: {per_example['HF generate'] / per_example['ONNX sampler, padded']:.2f}x "
              "HF generate")
    for note in notes:
        print(note)


def main(argv: list[str] | None = None) -> None:
    a = _args(argv)
    engines = {e.strip() for e in a.engines.split(",")}
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="bench-sampler-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        import json

        model_dir, onnx_dir, ort_dtype = _prepare(a, work)
        info = json.loads((onnx_dir / "onnx_config.json").read_text())
        prompts = _prompts(a, info["vocab_size"], len(info["special_tokens"]))
        times: dict[str, float] = {}
        notes = []
        if "hf" in engines:
            peer = prompts[: a.peer_examples] if a.peer_examples else prompts
            times["HF generate"] = (run_hf(a, model_dir, peer), len(peer))
            notes.append(f"HF generate: torch on {a.device}, {a.dtype}")
        if "ort" in engines:
            seconds, used = run_ort(a, onnx_dir, prompts)
            times["ONNX sampler"] = (seconds, len(prompts))
            notes.append(f"ONNX sampler ({ort_dtype} graph): {used}")
        if "ort-padded" in engines:
            seconds, used = run_ort(a, onnx_dir, prompts, batch_invariant=False)
            times["ONNX sampler, padded"] = (seconds, len(prompts))
            notes.append(f"ONNX sampler, padded ({ort_dtype} graph): {used}")
        _report(a, times, notes)
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
