"""ONNX Runtime sampler for the student: k samples per prompt from ONE prefill, sharing its cache.

Why not ``generate(num_return_sequences=k)``: that repeats the prompt k times *before* the
prefill, so a 1500-token prompt is processed k times and its cache is held and read k times per
step. Here each prompt is prefilled once (batch 1: no padding), and the exported graph (see
``settle.trainer.student.shared_prefix``) takes that cache as a per-example *prefix* that all k rows of
the example attend to, next to each row's own short *suffix* cache. All B*k rows decode together,
one graph run per step. The graph hands back only the top ``top_k`` logits of each row (sorted),
so the host samples over K values, not over the vocabulary: temperature, then top-k, then top-p,
exactly the order of transformers' warpers. Rows that emit a stop token are finished and leave
the running batch (an example keeps as many rows as its busiest sibling needs, since the graph
takes equal rows per example; an example with none left leaves with its prefix), so short
samples stop costing as soon as they end; the batch runs until every row has finished or the
budget is spent.

On CUDA the decode loop uses I/O binding: prefix and suffix caches stay on the device; per step
only token ids, positions and masks go up and the [rows, K] top logits and ids come down; rows
and examples are dropped on the device too (``gather.onnx``). The prefixes make one trip up per
call. The same binding code runs on CPU when asked for
(``io_binding=True``), which is how it is tested without a GPU.

Batch invariance (``batch_invariant``, on by default except on CUDA): an example's samples are
the same bits whatever batch it is sampled in and whichever rows finish beside it. Padding a
prefix to its batch's longest prompt changes the length of the reductions over it (the
ReduceSum of the softmax normaliser, the MatMul over the prefix values), and with it the kernels'
summation order, so the logits' last bits depended on the neighbours, and now and then a draw
near a tie did too (bootstrap student: one prompt padded by a single position moved its logits
by ~5e-6; 2 of 402 scored examples changed between batches of 1, 3, 5, 7 and 16). Invariant, each
example is decoded by graph runs of its *own*: its prefix exactly its prompt's cache (never
padded), its rows exactly its own live rows, the suffix as long as the step. Every shape its values
flow through is then a function of the example alone, and so is every kernel's choice of
algorithm and summation order. What grows is the run count (one per live example per step; a
run's fixed cost is ~0.1-0.3 ms on CPU for the small students), while no example pays for a
neighbour's longer prompt any more. On CUDA the default stays one padded run for the whole batch:
GPU kernels pick algorithms by shape, and a run per example would leave the device idle, so
invariance is not promised there; ``batch_invariant`` says which a sampler gives, and the scorer
records it.

Graph contract: ``settle.streams.contracts.student_dir``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from settle.streams.contracts.student_dir import (  # noqa: F401  (re-exported for callers of the sampler)
    CONFIG_FILE,
    GATHER_FILE,
    GRAPH_FORMAT,
    MODEL_FILE,
    GraphFormatError,
    cache_names,
    read_export_info,
)


@dataclass
class SamplerStats:
    """Counters, mainly so tests and benches can see how much work a call did."""

    prefill_runs: int = 0
    prefill_tokens: int = 0
    prefill_cache_hits: int = 0
    decode_steps: int = 0  # iterations of the decode loop that ran the graph
    decode_runs: int = 0  # graph runs for them: one per step, or one per live example per step (invariant)
    row_steps: int = 0  # rows computed, summed over decode steps (sampled_tokens / this = useful share)
    compactions: int = 0  # times finished rows were dropped from a running batch
    sampled_tokens: int = 0
    prefill_s: float = 0.0  # graph time, prefill runs
    decode_s: float = 0.0  # graph time, decode steps (incl. I/O binding transfers)
    sample_s: float = 0.0  # numpy time picking tokens


@dataclass
class _Run:
    """Examples decoding together, one graph run per step: all of a call's, or one (invariant)."""

    prefix: list  # per prefix name [E, H, P, D]: numpy, or OrtValues under I/O binding
    prefix_mask: np.ndarray  # [E, P]
    past: list  # per past name [rows, H, T, D]
    live: np.ndarray  # [rows] the call's row index of each row in the run
    positions: np.ndarray  # [rows] prompt length of each row's example
    done: np.ndarray  # [rows] finished (kept only as filler)
    values: np.ndarray  # [rows, K] top logits for the next token, descending
    ids: np.ndarray  # [rows, K] their token ids


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


def pick_tokens(
    values: np.ndarray, ids: np.ndarray, temperature: float, top_p: float, u: np.ndarray
) -> np.ndarray:
    """One token per row from its top candidates: ``values`` [N, K] logits sorted descending,
    ``ids`` [N, K] their token ids, ``u`` [N] uniforms in (0, 1].

    ``temperature <= 0`` is greedy. Otherwise softmax at ``temperature`` over the K candidates,
    then transformers' top-p rule: drop the tokens whose mass, together with every smaller
    token's, is <= 1 - top_p; the top token always stays. Then the inverse CDF at ``u``.
    """
    if temperature <= 0:
        return ids[:, 0].copy()
    w = np.exp((values.astype(np.float64) - values[:, :1]) / temperature)
    if top_p < 1.0:
        probs = w / w.sum(axis=1, keepdims=True)
        at_or_below = np.cumsum(probs[:, ::-1], axis=1)[:, ::-1]
        keep = at_or_below > 1.0 - top_p
        keep[:, 0] = True
        w *= keep
    cdf = np.cumsum(w, axis=1)
    # First index whose cdf reaches u * total: a kept token, since u > 0 and cdf is flat on zeros.
    j = (cdf < (u * cdf[:, -1])[:, None]).sum(axis=1)
    return ids[np.arange(len(ids)), np.minimum(j, ids.shape[1] - 1)]


def top_candidates(logits: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Host-side (values, ids) of each row's ``top_k`` largest logits, descending (0: all): what
    the graph's TopK returns, for callers that hold full logits."""
    n, v = logits.shape
    k = v if top_k <= 0 else min(top_k, v)
    ids = np.argpartition(-logits, k - 1, axis=1)[:, :k] if k < v else np.broadcast_to(np.arange(v), (n, v))
    vals = np.take_along_axis(logits, ids, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(ids, order, axis=1)


def sample_next(
    logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator, top_k: int = 0
) -> np.ndarray:
    """One token per row of full ``logits`` [N, V] (temperature, top-k, top-p; greedy at
    ``temperature <= 0``), drawing one uniform per row: the reference the graph path follows."""
    values, ids = top_candidates(np.asarray(logits, dtype=np.float32), top_k)
    return pick_tokens(values, ids, temperature, top_p, 1.0 - rng.random(len(values)))


def _nbytes(prefilled: tuple[np.ndarray, np.ndarray, list[np.ndarray]]) -> int:
    values, ids, cache = prefilled
    return values.nbytes + ids.nbytes + sum(a.nbytes for a in cache)


class Sampler:
    """k-samples-per-prompt sampler over an exported student (see module doc)."""

    def __init__(
        self,
        onnx_dir: str | Path,
        providers: Sequence[str | tuple[str, dict]] | None = None,
        io_binding: bool | None = None,
        session_options=None,
        prefill_cache_size: int = 8,
        prefill_cache_bytes: int = 1 << 30,
        compact: bool = True,
        batch_invariant: bool | None = None,
    ) -> None:
        """``providers`` default: CUDA when this ORT build has it, else CPU. ``io_binding``
        default: on iff the session runs on CUDA. The prefill memo holds at most
        ``prefill_cache_size`` prompts and ``prefill_cache_bytes`` of host cache (a 1500-token
        prompt of a 0.5B fp16 student is ~18 MB). ``compact``: drop finished rows from the running
        batch (results are the same either way; see ``sample``). ``batch_invariant``: decode
        each example in graph runs of its own, so that its samples do not depend on its batch
        (module doc); default on, except on CUDA."""
        import onnxruntime as ort

        self.dir = Path(onnx_dir)
        self.info = read_export_info(self.dir)
        providers = list(providers) if providers else default_providers()
        wants_cuda = any(_name(p) == "CUDAExecutionProvider" for p in providers)
        if wants_cuda and hasattr(ort, "preload_dlls"):
            # CUDA/cuDNN from the nvidia-* pip packages (as torch ships them) are not on the
            # loader path by default; without this ORT silently falls back to the CPU.
            ort.preload_dlls()
        self.session = ort.InferenceSession(
            str(self.dir / MODEL_FILE),
            sess_options=session_options,
            providers=providers,
        )
        on_cuda = self.session.get_providers()[0] == "CUDAExecutionProvider"
        self.device = "cuda" if on_cuda else "cpu"
        self.io_binding = on_cuda if io_binding is None else io_binding
        self.prefix_names, self.past_names, self.present_names = cache_names(self.info["num_layers"])
        self.dtype = np.float16 if self.info["dtype"] == "float16" else np.float32
        self.vocab_size: int = int(self.info["vocab_size"])
        self.stop_token_ids: list[int] = list(self.info.get("stop_token_ids", []))
        self.pad_token_id: int = int(self.info.get("pad_token_id") or 0)
        self.stats = SamplerStats()
        self._prefill_cache: OrderedDict[tuple[bytes, int], tuple[np.ndarray, np.ndarray, list[np.ndarray]]]
        self._prefill_cache = OrderedDict()
        self._prefill_cache_size = prefill_cache_size
        self._prefill_cache_bytes = prefill_cache_bytes
        self.prefill_cache_held = 0  # bytes in the memo now
        self._tokenizer = None
        self.compact = compact
        self.batch_invariant = not on_cuda if batch_invariant is None else batch_invariant
        self._gatherer = None  # gather.onnx's session, opened on first use

    def _kv(self, rows: int, length: int) -> np.ndarray:
        return np.zeros((rows, self.info["num_kv_heads"], length, self.info["head_dim"]), self.dtype)

    # -- graph runs -------------------------------------------------------------------------

    def _prefill(self, prompt: Sequence[int], top_k: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Top-k (values, ids) of the last position and the host cache [(1,H,L,D)]*2n for one
        prompt, memoised so a second round of samples for the same prompt costs no prefill."""
        ids = np.asarray(prompt, dtype=np.int64)[None, :]
        if ids.shape[1] == 0:
            raise ValueError("empty prompt")
        key = (ids.tobytes(), top_k)
        if key in self._prefill_cache:
            self._prefill_cache.move_to_end(key)
            self.stats.prefill_cache_hits += 1
            return self._prefill_cache[key]
        dummy, empty = self._kv(1, 1), self._kv(1, 0)  # prefix: one masked-off position
        feed = {
            "input_ids": ids,
            "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None, :],
            "prefix_mask": np.zeros((1, 1), np.int64),
            "suffix_mask": np.ones_like(ids),
            "top_k": np.array(top_k, np.int64),
            **{name: dummy for name in self.prefix_names},
            **{name: empty for name in self.past_names},
        }
        t = time.perf_counter()
        out = self.session.run(None, feed)
        self.stats.prefill_s += time.perf_counter() - t
        self.stats.prefill_runs += 1
        self.stats.prefill_tokens += ids.shape[1]
        result = (out[0][0], out[1][0], out[2:])
        if 0 < self._prefill_cache_size and _nbytes(result) <= self._prefill_cache_bytes:
            self._prefill_cache[key] = result
            self.prefill_cache_held += _nbytes(result)
            while (len(self._prefill_cache) > self._prefill_cache_size
                   or self.prefill_cache_held > self._prefill_cache_bytes):
                self.prefill_cache_held -= _nbytes(self._prefill_cache.popitem(last=False)[1])
        return result

    def _upload(self, arrays: list[np.ndarray]) -> list:
        """Host arrays -> what ``_decode`` binds: OrtValues on the device with I/O binding."""
        if not self.io_binding:
            return arrays
        from onnxruntime import OrtValue

        return [OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), self.device, 0) for a in arrays]

    def _decode(self, small: dict[str, np.ndarray], prefix: list, past: list) -> tuple[np.ndarray, np.ndarray, list]:
        """One graph run: top-k (values, ids) [N, K] on the host and the new suffix cache (kept on
        the device under I/O binding, numpy otherwise)."""
        self.stats.decode_runs += 1
        t = time.perf_counter()
        try:
            return self._decode_run(small, prefix, past)
        finally:
            self.stats.decode_s += time.perf_counter() - t

    def _decode_run(self, small: dict[str, np.ndarray], prefix: list, past: list):
        if not self.io_binding:
            out = self.session.run(
                None, {**small, **dict(zip(self.prefix_names, prefix)), **dict(zip(self.past_names, past))}
            )
            return out[0], out[1], out[2:]
        binding = self.session.io_binding()
        for name, arr in small.items():
            binding.bind_cpu_input(name, arr)
        for name, value in [*zip(self.prefix_names, prefix), *zip(self.past_names, past)]:
            if isinstance(value, np.ndarray):  # the empty first past
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        binding.bind_output("top_logits", "cpu")
        binding.bind_output("top_ids", "cpu")
        for name in self.present_names:
            binding.bind_output(name, self.device, 0)
        self.session.run_with_iobinding(binding)
        outs = binding.get_outputs()
        return outs[0].numpy(), outs[1].numpy(), outs[2:]

    def _gather(self, arrays: list, index: np.ndarray) -> list:
        """``[a[index] for a in arrays]`` where the arrays live: on the device under I/O binding
        (one run of ``gather.onnx``), with numpy otherwise."""
        if isinstance(arrays[0], np.ndarray):  # numpy path, or the empty past before step one
            return [a[index] for a in arrays]
        if self._gatherer is None:
            import onnxruntime as ort

            self._gatherer = ort.InferenceSession(str(self.dir / GATHER_FILE), providers=self.session.get_providers())
        binding = self._gatherer.io_binding()
        binding.bind_cpu_input("index", index.astype(np.int64))
        for j, value in enumerate(arrays):
            binding.bind_ortvalue_input(f"x.{j}", value)
            binding.bind_output(f"y.{j}", self.device, 0)
        self._gatherer.run_with_iobinding(binding)
        return binding.get_outputs()

    def _drop_finished(self, done: np.ndarray, prefix: list, past: list, prefix_mask: np.ndarray):
        """Shrink the batch to the busiest example's live rows: every example keeps that many rows
        (its live ones first, finished ones as filler: the graph needs equal rows per example),
        and examples with no live row leave with their prefix. Returns the new prefix, past,
        prefix mask and the kept rows' old indices (None when nothing can be dropped)."""
        grid = done.reshape(len(prefix_mask), -1)
        live_per = (~grid).sum(axis=1)
        keep = np.flatnonzero(live_per > 0)
        width = int(live_per.max())
        if len(keep) == len(grid) and width == grid.shape[1]:
            return prefix, past, prefix_mask, None
        self.stats.compactions += 1
        order = np.argsort(grid[keep], axis=1, kind="stable")[:, :width]  # live (False) first
        rows = (keep[:, None] * grid.shape[1] + order).ravel()
        if len(keep) < len(grid):
            prefix, prefix_mask = self._gather(prefix, keep), prefix_mask[keep]
        return prefix, self._gather(past, rows), prefix_mask, rows

    def _start_run(self, pre: list, members: list[int], k: int) -> _Run:
        """The decode state of the examples ``members`` (indices into the call's prompts), which
        then share one graph run per step: their prefixes (one example's is its prompt's cache
        as it is; several are left-padded to the longest), no past yet, k rows each."""
        caches = [pre[i][2] for i in members]
        lengths = np.array([c[0].shape[2] for c in caches])
        if len(members) == 1:
            prefix = list(caches[0])  # the memo's arrays, read, never written
            prefix_mask = np.ones((1, int(lengths[0])), np.int64)
        else:
            width = int(lengths.max())
            prefix = []
            for layer in range(len(self.prefix_names)):
                stacked = self._kv(len(members), width)
                for i, cache in enumerate(caches):
                    stacked[i, :, width - cache[layer].shape[2]:] = cache[layer][0]
                prefix.append(stacked)
            prefix_mask = (np.arange(width)[None, :] >= (width - lengths)[:, None]).astype(np.int64)
        rows = len(members) * k
        return _Run(
            prefix=self._upload(prefix),
            prefix_mask=prefix_mask,
            past=[self._kv(rows, 0)] * len(self.past_names),
            live=(np.asarray(members)[:, None] * k + np.arange(k)).ravel(),
            positions=np.repeat(lengths, k).astype(np.int64),
            done=np.zeros(rows, bool),
            values=np.repeat(np.stack([pre[i][0] for i in members]), k, axis=0),
            ids=np.repeat(np.stack([pre[i][1] for i in members]), k, axis=0),
        )

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
        top_k: int = 0,
    ) -> Any:
        """Per prompt, k sampled continuations (token ids, trimmed before the first stop token).

        ``seeds`` (one per prompt) gives every prompt its own generator, so its samples are the
        same whatever else is in the batch (the scorer relies on this for replay parity).
        ``return_stops`` also returns, per sample, the stop token that ended it (None: budget).

        ``temperature <= 0`` is greedy. ``top_k`` keeps each step's k most likely tokens before
        top-p (0: the whole vocabulary; serving uses a small one, as transformers' default 50
        does, so only [rows, top_k] values leave the graph). ``stop_token_ids`` defaults to the
        export's (``<|editable_region_end|>``, ``<|endoftext|>``); pass ``[]`` to always run the
        budget. Deterministic for a given ``seed``; call again with another seed for more
        samples (the prompt's prefill is reused from a small cache).
        """
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, not {top_k}")
        if not prompts or k <= 0 or max_new_tokens <= 0:
            empty = [[[] for _ in range(k)] for _ in prompts]
            return (empty, [[None] * k for _ in prompts]) if return_stops else empty
        cut = self.vocab_size if top_k == 0 else min(top_k, self.vocab_size)
        if temperature <= 0:
            cut = 1  # greedy needs only the top token
        rng = np.random.default_rng(seed)
        rngs = [np.random.default_rng(s) for s in seeds] if seeds is not None else None
        stops = np.asarray(self.stop_token_ids if stop_token_ids is None else list(stop_token_ids))
        pre = [self._prefill(p, cut) for p in prompts]
        n = len(prompts) * k
        # Invariant: a run per example, so nothing about an example's runs depends on the others.
        members = [[i] for i in range(len(prompts))] if self.batch_invariant else [list(range(len(prompts)))]
        runs = [self._start_run(pre, m, k) for m in members]
        top_k_input = np.array(cut, np.int64)

        tokens = np.zeros((n, max_new_tokens), np.int64)  # row r's sample: tokens[r, :produced[r]]
        produced = np.zeros(n, np.int64)
        stopped_by = np.full(n, -1, np.int64)
        for step in range(max_new_tokens):
            # Every row's uniform is drawn whether or not it is still live, so dropping finished
            # rows never shifts what the others draw.
            t = time.perf_counter()
            if rngs is None:
                u = 1.0 - rng.random(n)
            else:
                u = np.concatenate([1.0 - g.random(k) for g in rngs])
            picked = [pick_tokens(r.values, r.ids, temperature, top_p, u[r.live]) for r in runs]
            self.stats.sample_s += time.perf_counter() - t
            going_on = []
            for run, tok in zip(runs, picked):
                live, done = run.live, run.done
                hit = np.isin(tok, stops) & ~done
                stopped_by[live[hit]] = tok[hit]
                going = ~done & ~hit
                tokens[live[going], step] = tok[going]
                produced[live[going]] += 1
                self.stats.sampled_tokens += int((~done).sum())
                done |= hit
                if not done.all():
                    going_on.append((run, tok))
            if not going_on or step == max_new_tokens - 1:
                break
            self.stats.decode_steps += 1
            runs = []
            for run, tok in going_on:
                if self.compact:
                    run.prefix, run.past, run.prefix_mask, rows = self._drop_finished(
                        run.done, run.prefix, run.past, run.prefix_mask)
                    if rows is not None:
                        run.live, run.done, tok = run.live[rows], run.done[rows], tok[rows]
                        run.positions = run.positions[rows]
                small = {
                    "input_ids": np.where(run.done, self.pad_token_id, tok).astype(np.int64)[:, None],
                    "position_ids": (run.positions + step)[:, None],
                    "prefix_mask": run.prefix_mask,
                    "suffix_mask": np.ones((len(run.live), step + 1), np.int64),
                    "top_k": top_k_input,
                }
                self.stats.row_steps += len(run.live)
                run.values, run.ids, run.past = self._decode(small, run.prefix, run.past)
                runs.append(run)
        out = [tokens[r, : produced[r]].tolist() for r in range(n)]
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
        top_k: int = 0,
    ) -> list[list[str]]:
        """``sample`` on strings: encodes with the exported tokenizer, decodes keeping specials."""
        tok = self.tokenizer
        ids = [tok.encode(p, add_special_tokens=False) for p in prompts]
        samples = self.sample(ids, k, max_new_tokens, temperature, top_p, seed, top_k=top_k)
        return [[tok.decode(s, skip_special_tokens=False) for s in per] for per in samples]
