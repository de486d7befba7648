"""Render examples into (prompt, target) training pairs and tokenize them with the loss on the target only.

Its own module because this is where the trainer must agree with the scorer: the prompt comes from
the one prompt format (``settle.streams.contracts.prompt``) with the budget the scorer sampled with,
and labels are ``IGNORE_INDEX`` on every prompt position, so the student learns to write the region,
not to echo the prompt.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from settle.schemas.examples import SettledExample
from settle.schemas.scored import DEFAULT_MAX_CHARS, ScoredExample
from settle.streams.contracts.prompt import SPECIAL_TOKENS, render_prompt, render_target
from settle.trainer.data.records import as_settled

__all__ = ["IGNORE_INDEX", "POLICY", "TokenizedPairs", "TrainingPair", "render", "tokenize_pairs"]

#: loss-ignored label, as in transformers / torch.nn.CrossEntropyLoss
IGNORE_INDEX: Final = -100


@dataclass(frozen=True)
class TrainingPair:
    """``prompt + target`` is the training text; the loss covers only ``target``."""

    prompt: str
    target: str
    id: str = ""


class _PolicyBudget:
    def __repr__(self) -> str:
        return "POLICY"


#: ``render(max_chars=POLICY)``: a ScoredExample's own ``policy.max_prompt_chars`` (the
#: budget the scorer sampled with), else ``DEFAULT_MAX_CHARS``.
POLICY: Final = _PolicyBudget()


def render(example: SettledExample | ScoredExample, *, max_chars: int | None | _PolicyBudget = POLICY) -> TrainingPair:
    """The training pair of one example; raises ``UnrenderableExample`` like the scorer would.

    By default a ScoredExample is rendered with the prompt budget recorded in
    its decision, so the student is trained on exactly the prompt it was scored on.
    """
    settled = as_settled(example)
    if isinstance(max_chars, _PolicyBudget):
        scored = isinstance(example, ScoredExample)
        max_chars = example.decision.policy.max_prompt_chars if scored else DEFAULT_MAX_CHARS
    return TrainingPair(render_prompt(settled, max_chars=max_chars), render_target(settled), settled.id)


class TokenizedPairs(list):  # list[dict[str, list[int]]]
    """The tokenized rows, plus what did not fit.

    ``skipped``: indices (into the input pairs) whose target alone did not fit;
    ``truncated``: indices whose prompt lost tokens on the left.
    """

    skipped: list[int]
    truncated: list[int]

    def __init__(self, rows: Iterable[dict[str, list[int]]] = (), skipped: list[int] | None = None,
                 truncated: list[int] | None = None) -> None:
        super().__init__(rows)
        self.skipped = skipped or []
        self.truncated = truncated or []


def _encode_batch(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    if hasattr(tokenizer, "encode_batch") and not callable(getattr(tokenizer, "convert_tokens_to_ids", None)):
        # a raw `tokenizers.Tokenizer`
        return [list(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _check_special_tokens(tokenizer: Any) -> None:
    ids = _encode_batch(tokenizer, list(SPECIAL_TOKENS))
    bad = [t for t, i in zip(SPECIAL_TOKENS, ids) if len(i) != 1]
    if bad:
        raise ValueError(f"tokenizer splits prompt markers {bad}: they must be single (added) tokens")


def tokenize_pairs(
    pairs: Sequence[TrainingPair],
    tokenizer: Any,
    max_tokens: int,
    *,
    min_prompt_tokens: int = 1,
) -> TokenizedPairs:
    """Rows of ``input_ids``, ``labels`` (``-100`` on every prompt position) and ``attention_mask``.

    Prompt and target are tokenized apart and concatenated; this equals
    tokenizing the joined text because the prompt ends in a special token, a
    hard boundary for the tokenizer. When a row exceeds ``max_tokens`` the
    prompt loses tokens from the left (the oldest context; the region markers
    sit at its end), never the target. A pair whose target leaves fewer than
    ``min_prompt_tokens`` prompt tokens is skipped (index in ``.skipped``): with
    no prompt token at all the first target token is never predicted.
    ``tokenizer`` is a ``PreTrainedTokenizerFast`` or a ``tokenizers.Tokenizer``
    in which every ``SPECIAL_TOKENS`` string is one token (checked).
    """
    if max_tokens < 1 or min_prompt_tokens < 0:
        raise ValueError(f"need max_tokens >= 1 and min_prompt_tokens >= 0, got {max_tokens}, {min_prompt_tokens}")
    _check_special_tokens(tokenizer)
    prompts = _encode_batch(tokenizer, [p.prompt for p in pairs])
    targets = _encode_batch(tokenizer, [p.target for p in pairs])
    out = TokenizedPairs()
    for i, (p, t) in enumerate(zip(prompts, targets)):
        room = max_tokens - len(t)
        if not t or room < min_prompt_tokens:
            out.skipped.append(i)
            continue
        if len(p) > room:
            p = p[len(p) - room :] if room > 0 else []
            out.truncated.append(i)
        ids = p + t
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * len(p) + t, "attention_mask": [1] * len(ids)})
    return out
