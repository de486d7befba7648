"""The learning-rate schedule: linear warmup to ``lr``, then cosine decay to ``min_lr`` at the last step.

Its own module because it is a pure function of (step, config) that the loop hands to torch's
``LambdaLR`` and the tests check on its own.
"""

from __future__ import annotations

import math

from settle.trainer.finetune.config import FinetuneConfig


def lr_at(step: int, config: FinetuneConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine to min_lr."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / (config.warmup_steps + 1)
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)
