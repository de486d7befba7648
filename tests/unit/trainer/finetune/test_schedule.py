"""The learning-rate schedule: warmup, then cosine decay to min_lr."""

from __future__ import annotations

import pytest

from settle.trainer.finetune.config import FinetuneConfig
from settle.trainer.finetune.schedule import lr_at


def test_lr_warms_up_then_decays_to_min_lr():
    c = FinetuneConfig(steps=100, lr=1e-3, min_lr=1e-4, warmup_steps=10)
    lrs = [lr_at(s, c) for s in range(100)]
    assert lrs[:10] == sorted(lrs[:10]) and lrs[9] < c.lr
    assert lrs[10] == pytest.approx(c.lr)
    assert lrs[10:] == sorted(lrs[10:], reverse=True)
    assert lrs[-1] == pytest.approx(c.min_lr, rel=0.01)
