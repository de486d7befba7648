"""An exported student as the scorer's sample source: text in, parsed draws out.

The model directory is what the export (and later the trainer's publisher)
writes: ``model.onnx``, ``onnx_config.json``, tokenizer files, and optionally
``manifest.json`` with the published name and version. Without a manifest the
version is a hash of the weights, so every decision still names exactly the
model that made it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from settle.streams.contracts.student_dir import (  # noqa: F401  (ModelDirError re-exported)
    GraphFormatError,
    ModelDirError,
    check_model_dir,
    model_identity,
)
from settle.streams.runtime.sampler import Sampler
from settle.streams.scoring.score import Draw


class OnnxStudent:
    """Implements the scorer's SampleSource over an ONNX Runtime sampler."""

    def __init__(self, model_dir: str | Path, providers: Sequence[str] | None = None, max_prompt_tokens: int = 2048):
        self.dir = Path(model_dir)
        check_model_dir(self.dir)
        # prefill is memoised per prompt, so later rounds of a batch skip it
        try:
            self.sampler = Sampler(self.dir, providers=providers, prefill_cache_size=256)
        except GraphFormatError as exc:
            raise ModelDirError(str(exc)) from None
        self.tokenizer = self.sampler.tokenizer
        self.model_name, self.model_version = model_identity(self.dir)
        self.max_prompt_tokens = max_prompt_tokens
        self._end_ids = set(self.sampler.stop_token_ids)
        self._region_end = self.tokenizer.convert_tokens_to_ids("<|editable_region_end|>")

    @property
    def batch_invariant(self) -> bool:
        """Whether an example's draws are the same whatever batch they are drawn in: promised on
        ONNX Runtime's CPU provider only (runs of its own per example; see the sampler). On CUDA
        the default is one padded run per batch, and even runs of one example alone have not been
        checked for it (GPU libraries may pick kernels by workspace and heuristics), so a CUDA
        scorer records False."""
        return self.sampler.batch_invariant and self.sampler.device == "cpu"

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids, cut from the left past the budget: the region and output markers are at the end."""
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return ids[-self.max_prompt_tokens :]

    def draw(
        self, prompts: Sequence[str], n: int, seeds: Sequence[int], *, temperature: float,
        top_p: float, max_new_tokens: int, top_k: int = 0,
    ) -> list[list[Draw]]:
        ids = [self.encode_prompt(p) for p in prompts]
        tokens, stops = self.sampler.sample(
            ids, n, max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seeds=list(seeds),
            return_stops=True,
        )
        return [[self.to_draw(toks, stop) for toks, stop in zip(rows, row_stops)] for rows, row_stops in zip(tokens, stops)]

    def to_draw(self, tokens: list[int], stop: int | None) -> Draw:
        """A sample's text (its stop token excluded) and what ended it (``stop``: None = budget)."""
        kind = "budget" if stop is None else ("end" if stop == self._region_end else "eos")
        return Draw(self.tokenizer.decode(tokens, skip_special_tokens=False), kind)
