"""The loss the run optimises and reports: summed over target tokens, divided by their number.

Its own module because every target token must weigh the same whatever the padding, micro-batching
or number of processes; ``loss_sums`` returns (sum, count) so callers can add them up across ranks
before dividing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from settle.trainer.finetune.batches import collate, count_targets
from settle.trainer.finetune.devices import autocast


def loss_sums(model, items: Sequence, batch_size: int, pad_id: int, autocast_dtype=None) -> tuple[float, int]:
    """(sum of target-token losses, number of target tokens) over ``items``, no gradients."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for i in range(0, len(items), batch_size):
                batch = collate(items[i : i + batch_size], pad_id)
                n = count_targets(batch["labels"])
                if n == 0:
                    continue
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast(device, autocast_dtype):
                    # num_items_in_batch=1 turns the model's mean into a sum over target tokens.
                    out = model(**batch, use_cache=False, num_items_in_batch=1)
                total += float(out.loss)
                count += n
    finally:
        model.train(was_training)
    return total, count


def eval_loss(model, items: Sequence[dict], batch_size: int = 8) -> float:
    """Mean loss per target token (labels != -100) of ``model`` on ``items``; NaN if none has a target."""
    pad_id = getattr(model.config, "pad_token_id", None)
    total, count = loss_sums(model, list(items), batch_size, 0 if pad_id is None else pad_id)
    return total / count if count else float("nan")
