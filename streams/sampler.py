"""ONNX Runtime sampler for the student: k samples per prompt from ONE prefill.

Why not ``generate(num_return_sequences=k)``: that repeats the prompt k times *before* the
prefill, so a 1500-token prompt is processed k times. Here each prompt is prefilled once (batch 1:
no padding, so no fully-masked query rows), its KV cache is left-padded to the longest prompt of
the call and repeated k times, and all B*k rows decode together, one step per graph run, with
temperature/top-p sampling done in numpy. Rows that emit a stop token are finished (their later
outputs are masked off); the batch runs until every row has finished or the budget is spent.

On CUDA the decode loop uses I/O binding: the cache produced by one step stays on the device and
is bound as the next step's input, so only the token ids, mask, positions (host -> device) and
the last-position logits (device -> host) cross the bus per step. The cache makes one trip up
per call (after the host-side pad/repeat). The same binding code runs on CPU when asked for
(``io_binding=True``), which is how it is tested without a GPU.

Graph contract: see ``settle.trainer.export`` (``model.onnx`` + ``onnx_config.json``).
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# Block width of the two-level inverse-CDF search (see _first_reaching).
_BLOCK = 512


@dataclass
class SamplerStats:
    """Counters, mainly so tests and benches can see how much work a call did."""

    prefill_runs: int = 0
    prefill_tokens: int = 0
    prefill_cache_hits: int = 0
    decode_steps: int = 0
    sampled_tokens: int = 0
    prefill_s: float = 0.0  # graph time, prefill runs
    decode_s: float = 0.0  # graph time, decode steps (incl. I/O binding transfers)
    sample_s: float = 0.0  # numpy time picking tokens


def default_providers() -> list:
    """CUDA first when this ONNX Runtime build has it (onnxruntime-gpu), else CPU.

    TF32 is off: it only touches fp32 graphs, which on a GPU are the exactness/debug path
    (greedy output then matches transformers); fp16 graphs, the serving path, are unaffected."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _name(provider: str | tuple[str, dict]) -> str:
    return provider if isinstance(provider, str) else provider[0]


def _first_reaching(w: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per row, the first column where ``cumsum(w) >= target`` (clamped to the last column with
    positive weight). Two-level: block sums, then a cumsum inside one block per row, because a
    full [N, V] cumsum is the slowest pass of a 150k-vocabulary step."""
    n, v = w.shape
    rows = np.arange(n)
    b = min(v, _BLOCK)
    starts = np.arange(0, v, b)
    cb = np.cumsum(np.add.reduceat(w, starts, axis=1), axis=1)
    blk = np.minimum((cb < target[:, None]).sum(axis=1), len(starts) - 1)
    base = np.where(blk > 0, cb[rows, blk - 1], 0.0)
    cols = blk[:, None] * b + np.arange(b)[None, :]
    seg = np.where(cols < v, w[rows[:, None], np.minimum(cols, v - 1)], 0.0)
    j = ((base[:, None] + np.cumsum(seg, axis=1)) < target[:, None]).sum(axis=1)
    last = np.where(seg > 0, np.arange(b)[None, :], 0).max(axis=1)
    return blk * b + np.minimum(j, last)


def _nucleus(w: np.ndarray, total: np.ndarray, top_p: float) -> np.ndarray:
    """Zero, in place, everything in ``w`` (unnormalised weights) outside each row's nucleus.

    HF's rule read in ascending order: drop the smallest tokens while their running mass is
    <= (1 - top_p); the top token always stays. The threshold comes from a value sort. Tokens
    below ``eps = (1 - top_p) * total / V`` are dropped whatever the order (all of them together
    weigh <= the dropped mass), so when few tokens reach ``eps`` (a peaked, trained model) only
    those are sorted. Tokens tied with the threshold are all kept.
    """
    n, v = w.shape
    rows = np.arange(n)
    target = (1.0 - top_p) * total
    kc = int((w >= (target / v)[:, None]).sum(axis=1).max())
    if kc < v // 2:
        top = np.partition(w, v - kc, axis=1)[:, v - kc:]
        asc = np.sort(top, axis=1)
        target = target - (total - top.sum(axis=1, dtype=np.float64))
    else:
        asc = np.sort(w, axis=1)
    thr = asc[rows, _first_reaching(asc, target)]
    w *= w >= thr[:, None]
    return w


def _sample_rows(logits: np.ndarray, temperature: float, top_p: float, u: np.ndarray) -> np.ndarray:
    w = logits.astype(np.float32)  # always a copy: the in-place ops below are ours
    if temperature != 1.0:
        w *= np.float32(1.0 / temperature)
    w -= w.max(axis=1, keepdims=True)
    np.exp(w, out=w)  # unnormalised weights, row max 1: saves a normalising pass
    total = w.sum(axis=1, dtype=np.float64)
    if top_p < 1.0:
        w = _nucleus(w, total, top_p)
        total = w.sum(axis=1, dtype=np.float64)
    return _first_reaching(w, u * total)


_POOL: ThreadPoolExecutor | None = None


def sample_next(
    logits: np.ndarray,
    temperature: float,
    top_p: float,
    rng: np.random.Generator,
    threads: int = 1,
) -> np.ndarray:
    """One token per row of ``logits`` [N, V]: argmax when ``temperature <= 0``, else
    temperature + nucleus (top-p) sampling. Draws exactly one uniform per row up front, so a
    seed fixes the result however rows are split over ``threads`` (numpy drops the GIL in the
    heavy passes; a 16 x 150k step is ~10 ms on one core)."""
    if temperature <= 0:
        return np.asarray(logits).argmax(axis=1)
    return sample_with_uniforms(logits, temperature, top_p, 1.0 - rng.random(logits.shape[0]), threads)


def sample_with_uniforms(
    logits: np.ndarray, temperature: float, top_p: float, u: np.ndarray, threads: int = 1
) -> np.ndarray:
    """``sample_next`` with the per-row uniforms in (0, 1] supplied by the caller.

    Lets each prompt draw from its own generator, so a prompt's samples do not
    depend on which other prompts share the batch.
    """
    if temperature <= 0:
        return np.asarray(logits).argmax(axis=1)
    n = logits.shape[0]
    parts = min(threads, n)
    if parts <= 1 or logits.size < 1 << 20:
        return _sample_rows(logits, temperature, top_p, u)
    global _POOL
    if _POOL is None or _POOL._max_workers < parts:
        _POOL = ThreadPoolExecutor(max_workers=parts, thread_name_prefix="sampler")
    bounds = np.linspace(0, n, parts + 1).astype(int)
    jobs = [
        _POOL.submit(_sample_rows, logits[a:b], temperature, top_p, u[a:b])
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    return np.concatenate([j.result() for j in jobs])


class Sampler:
    """k-samples-per-prompt sampler over an exported student (see module doc)."""

    def __init__(
        self,
        onnx_dir: str | Path,
        providers: Sequence[str | tuple[str, dict]] | None = None,
        io_binding: bool | None = None,
        session_options=None,
        prefill_cache_size: int = 8,
        sample_threads: int | None = None,
    ) -> None:
        """``providers`` default: CUDA when this ORT build has it, else CPU. ``io_binding``
        default: on iff the session runs on CUDA. ``sample_threads`` (default: up to 8 cores)
        split the numpy sampling of a step by rows; results do not depend on it."""
        import onnxruntime as ort

        providers = list(providers) if providers else default_providers()
        wants_cuda = any(_name(p) == "CUDAExecutionProvider" for p in providers)
        if wants_cuda and hasattr(ort, "preload_dlls"):
            # CUDA/cuDNN from the nvidia-* pip packages (as torch ships them) are not on the
            # loader path by default; without this ORT silently falls back to the CPU.
            ort.preload_dlls()
        self.dir = Path(onnx_dir)
        self.info = json.loads((self.dir / "onnx_config.json").read_text())
        self.session = ort.InferenceSession(
            str(self.dir / "model.onnx"),
            sess_options=session_options,
            providers=providers,
        )
        on_cuda = self.session.get_providers()[0] == "CUDAExecutionProvider"
        self.device = "cuda" if on_cuda else "cpu"
        self.io_binding = on_cuda if io_binding is None else io_binding
        n = self.info["num_layers"]
        self.past_names = [f"past_key_values.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
        self.present_names = [f"present.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
        self.dtype = np.float16 if self.info["dtype"] == "float16" else np.float32
        self.stop_token_ids: list[int] = list(self.info.get("stop_token_ids", []))
        self.pad_token_id: int = int(self.info.get("pad_token_id") or 0)
        self.stats = SamplerStats()
        self._prefill_cache: OrderedDict[bytes, tuple[np.ndarray, list[np.ndarray]]] = OrderedDict()
        self._prefill_cache_size = prefill_cache_size
        self._tokenizer = None
        self.sample_threads = sample_threads or min(8, os.cpu_count() or 1)

    # -- graph runs -------------------------------------------------------------------------

    def _prefill(self, prompt: Sequence[int]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Last-position logits [V] and host cache [(1,H,L,D)]*2n for one prompt, memoised so a
        second round of samples for the same prompt costs no prefill."""
        ids = np.asarray(prompt, dtype=np.int64)[None, :]
        if ids.shape[1] == 0:
            raise ValueError("empty prompt")
        key = ids.tobytes()
        if key in self._prefill_cache:
            self._prefill_cache.move_to_end(key)
            self.stats.prefill_cache_hits += 1
            return self._prefill_cache[key]
        empty = np.zeros((1, self.info["num_kv_heads"], 0, self.info["head_dim"]), self.dtype)
        feed = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None, :],
        }
        feed.update({name: empty for name in self.past_names})
        t = time.perf_counter()
        out = self.session.run(None, feed)
        self.stats.prefill_s += time.perf_counter() - t
        self.stats.prefill_runs += 1
        self.stats.prefill_tokens += ids.shape[1]
        result = (out[0][0, -1].astype(np.float32), out[1:])
        if self._prefill_cache_size > 0:
            self._prefill_cache[key] = result
            while len(self._prefill_cache) > self._prefill_cache_size:
                self._prefill_cache.popitem(last=False)
        return result

    def _upload(self, arrays: list[np.ndarray]) -> list:
        """Host cache -> what ``_decode`` takes: OrtValues on the device with I/O binding."""
        if not self.io_binding:
            return arrays
        from onnxruntime import OrtValue

        return [OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), self.device, 0) for a in arrays]

    def _decode(self, small: dict[str, np.ndarray], past: list) -> tuple[np.ndarray, list]:
        """One step: returns last-position logits [N, V] on the host and the new cache (kept on
        the device under I/O binding, numpy otherwise)."""
        self.stats.decode_steps += 1
        t = time.perf_counter()
        try:
            return self._decode_run(small, past)
        finally:
            self.stats.decode_s += time.perf_counter() - t

    def _decode_run(self, small: dict[str, np.ndarray], past: list) -> tuple[np.ndarray, list]:
        if not self.io_binding:
            out = self.session.run(None, {**small, **dict(zip(self.past_names, past))})
            return out[0][:, -1], out[1:]
        binding = self.session.io_binding()
        for name, arr in small.items():
            binding.bind_cpu_input(name, arr)
        for name, value in zip(self.past_names, past):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self.present_names:
            binding.bind_output(name, self.device, 0)
        self.session.run_with_iobinding(binding)
        outs = binding.get_outputs()
        return outs[0].numpy()[:, -1], outs[1:]

    # -- public API -------------------------------------------------------------------------

    def sample(
        self,
        prompts: list[list[int]],
        k: int,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        stop_token_ids: Sequence[int] | None = None,
        seeds: Sequence[int] | None = None,
        return_stops: bool = False,
    ) -> Any:
        """Per prompt, k sampled continuations (token ids, trimmed before the first stop token).

        ``seeds`` (one per prompt) gives every prompt its own generator, so its samples are the
        same whatever else is in the batch (the scorer relies on this for replay parity).
        ``return_stops`` also returns, per sample, the stop token that ended it (None: budget).

        ``temperature <= 0`` is greedy. ``stop_token_ids`` defaults to the export's
        (``<|editable_region_end|>``, ``<|endoftext|>``); pass ``[]`` to always run the budget.
        Deterministic for a given ``seed``; call again with another seed for more samples (the
        prompt's prefill is reused from a small cache).
        """
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        if not prompts or k <= 0 or max_new_tokens <= 0:
            empty = [[[] for _ in range(k)] for _ in prompts]
            return (empty, [[None] * k for _ in prompts]) if return_stops else empty
        rng = np.random.default_rng(seed)
        rngs = [np.random.default_rng(s) for s in seeds] if seeds is not None else None
        stops = np.asarray(self.stop_token_ids if stop_token_ids is None else list(stop_token_ids))
        pre = [self._prefill(p) for p in prompts]
        lengths = np.repeat([len(p) for p in prompts], k)
        n, width = len(lengths), int(lengths.max())

        # Left-pad each prompt's cache to `width`, then repeat it k times (rows example-major).
        past = []
        for layer in range(len(self.past_names)):
            parts = [c[layer] for _, c in pre]
            h, d = parts[0].shape[1], parts[0].shape[3]
            stacked = np.zeros((len(parts), h, width, d), self.dtype)
            for i, part in enumerate(parts):
                stacked[i, :, width - part.shape[2]:] = part
            past.append(np.repeat(stacked, k, axis=0))
        past = self._upload(past)
        mask = np.zeros((n, width + max_new_tokens), np.int64)
        mask[:, :width] = np.arange(width)[None, :] >= (width - lengths)[:, None]
        positions = lengths.astype(np.int64)
        logits = np.repeat(np.stack([lg for lg, _ in pre]), k, axis=0)

        out: list[list[int]] = [[] for _ in range(n)]
        done = np.zeros(n, bool)
        stopped_by = np.full(n, -1, np.int64)
        for step in range(max_new_tokens):
            t = time.perf_counter()
            if rngs is None or temperature <= 0:
                tok = sample_next(logits, temperature, top_p, rng, self.sample_threads)
            else:
                u = np.concatenate([1.0 - g.random(k) for g in rngs])
                tok = sample_with_uniforms(logits, temperature, top_p, u, self.sample_threads)
            self.stats.sample_s += time.perf_counter() - t
            hit = np.isin(tok, stops) & ~done
            stopped_by[hit] = tok[hit]
            for r in np.flatnonzero(~done & ~hit):
                out[r].append(int(tok[r]))
            self.stats.sampled_tokens += int((~done).sum())
            done |= hit
            if done.all() or step == max_new_tokens - 1:
                break
            mask[:, width + step] = 1
            small = {
                "input_ids": np.where(done, self.pad_token_id, tok).astype(np.int64)[:, None],
                "attention_mask": np.ascontiguousarray(mask[:, : width + step + 1]),
                "position_ids": (positions + step)[:, None],
            }
            logits, past = self._decode(small, past)
        grouped = [out[i * k:(i + 1) * k] for i in range(len(prompts))]
        if not return_stops:
            return grouped
        stop_ids = [None if s < 0 else int(s) for s in stopped_by]
        return grouped, [stop_ids[i * k:(i + 1) * k] for i in range(len(prompts))]

    @property
    def tokenizer(self):
        """The exported tokenizer (``PreTrainedTokenizerFast``), loaded on first use."""
        if self._tokenizer is None:
            from transformers import PreTrainedTokenizerFast

            self._tokenizer = PreTrainedTokenizerFast.from_pretrained(str(self.dir))
        return self._tokenizer

    def sample_text(
        self,
        prompts: list[str],
        k: int,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[list[str]]:
        """``sample`` on strings: encodes with the exported tokenizer, decodes keeping specials."""
        tok = self.tokenizer
        ids = [tok.encode(p, add_special_tokens=False) for p in prompts]
        samples = self.sample(ids, k, max_new_tokens, temperature, top_p, seed)
        return [[tok.decode(s, skip_special_tokens=False) for s in per] for per in samples]
