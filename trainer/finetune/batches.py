"""Items to micro-batches: validate and truncate items, a seeded endless item stream, right padding.

Its own module because the data order is part of the run's determinism: the stream is a fixed function
of (seed, position), epochs being seeded permutations, so a resumed run or a run under torchrun with
another number of processes sees the same items at the same step and needs no data-loader state.
Items are dicts with ``input_ids`` and ``labels`` as ``settle.trainer.data.pairs`` makes them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import lru_cache

import torch

from settle.trainer.data.pairs import IGNORE_INDEX


def prepare_items(items: Sequence[dict], max_tokens: int | None) -> list[tuple[list[int], list[int]]]:
    """Validate and truncate items to ``(input_ids, labels)`` pairs; drop items with no target token.

    Truncation keeps the *last* ``max_tokens`` tokens: the target sits at the end of an item and the
    prompt is cut from the left, as the scorer cuts prompts. A label at position 0 never counts (the
    model predicts token t from tokens < t), so an item needs a target label at position >= 1.
    """
    out = []
    for i, item in enumerate(items):
        ids, labels = list(item["input_ids"]), list(item["labels"])
        if len(ids) != len(labels):
            raise ValueError(f"item {i}: {len(ids)} input_ids but {len(labels)} labels")
        if max_tokens:
            ids, labels = ids[-max_tokens:], labels[-max_tokens:]
        if any(label != IGNORE_INDEX for label in labels[1:]):
            out.append((ids, labels))
    if len(out) < len(items):
        warnings.warn(f"{len(items) - len(out)} of {len(items)} items have no target token and are skipped")
    return out


def collate(items: Sequence[tuple[list[int], list[int]] | dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a micro-batch to its longest item: input_ids with ``pad_id``, labels with -100, mask 0.

    Right padding, so every item's positions start at 0 as they do when it is scored alone.
    """
    pairs = [(it["input_ids"], it["labels"]) if isinstance(it, dict) else it for it in items]
    width = max(len(ids) for ids, _ in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, (ids, lab) in enumerate(pairs):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[row, : len(lab)] = torch.tensor(lab, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def count_targets(labels: torch.Tensor) -> int:
    """Target tokens the causal-LM loss counts: labels shifted by one, -100 ignored."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


@lru_cache(maxsize=4)
def _epoch_order(n_items: int, seed: int, epoch: int) -> tuple[int, ...]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(n_items, generator=g).tolist())


def stream_indices(n_items: int, seed: int, start: int, count: int) -> list[int]:
    """Items at positions ``[start, start + count)`` of the endless stream of seeded epoch permutations."""
    return [_epoch_order(n_items, seed, p // n_items)[p % n_items] for p in range(start, start + count)]
