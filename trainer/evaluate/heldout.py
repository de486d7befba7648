"""Evaluate an exported student on held-out examples, the way the scorer would run it.

Predictions come from the same ONNX sampler and prompt format the scorer
uses (greedy, one sample), so "better on the held-out set" means better in
production, not better in a different code path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from settle.schemas.examples import SettledExample
from settle.streams.contracts.prompt import OutputParseError, render_prompt
from settle.streams.contracts.sampling import SamplingConfig
from settle.streams.runtime.student import OnnxStudent
from settle.streams.scoring.score import parse_draw
from settle.trainer.evaluate.summary import EvalSummary, row_from_example, summarize


def predict(
    student: OnnxStudent, examples: Sequence[SettledExample], *, max_new_tokens: int = 128,
    max_prompt_chars: int | None = None, batch: int = 16,
) -> list[str | None]:
    """Greedy region text per example; None where the output does not parse inside the region."""
    out: list[str | None] = []
    for i in range(0, len(examples), batch):
        chunk = examples[i : i + batch]
        prompts = [render_prompt(e, **({"max_chars": max_prompt_chars} if max_prompt_chars else {})) for e in chunk]
        greedy = SamplingConfig(temperature=0.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens)
        draws = student.draw(prompts, 1, [0] * len(chunk), **greedy.decoding())
        for example, (draw,) in zip(chunk, draws, strict=True):
            try:
                out.append(parse_draw(draw, example))
            except OutputParseError:
                out.append(None)
    return out


def evaluate(model_dir: Path, examples: Sequence[SettledExample], *, max_new_tokens: int = 128) -> EvalSummary:
    student = OnnxStudent(model_dir)
    predictions = predict(student, examples, max_new_tokens=max_new_tokens)
    return summarize(row_from_example(e, p) for e, p in zip(examples, predictions))


def summary_dict(summary: EvalSummary) -> dict[str, float]:
    return {
        "delta_chrf": summary.delta_chrf,
        "reversal_ratio": summary.reversal_ratio,
        "exact_match_rate": summary.exact_match_rate,
        "parse_rate": summary.parse_rate,
        "kept_rate": summary.kept_rate,
        "recall_rate": summary.recall_rate,
        "count": float(summary.count),
    }
