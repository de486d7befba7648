"""Checkpoints that make a killed run resume to the weights of an uninterrupted one.

Its own module because resuming is a contract: ``out_dir/checkpoints/step-N/`` holds the trainable
weights (``model.safetensors``) and ``trainer_state.pt`` (optimizer, scheduler, grad scaler, every
rank's RNG state, step, eval history). They are written to a temporary directory and renamed, so a
kill mid-write never leaves a broken "latest" checkpoint; only rank 0 writes, all ranks read, so the
directory must be on a filesystem they share.
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from settle.trainer.finetune.config import CHECKPOINTS, STATE_FILE, WEIGHTS_FILE
from settle.trainer.finetune.devices import Dist
from settle.trainer.finetune.model import trainable_params

_STEP_DIR = re.compile(r"^step-(\d+)$")


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step under ``out_dir/checkpoints``, if any."""
    root = Path(out_dir) / CHECKPOINTS
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = _STEP_DIR.match(p.name)
            if m and (p / STATE_FILE).exists() and (p / WEIGHTS_FILE).exists():
                found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def _rng_state(device: torch.device) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(out_dir: Path, step: int, model, state: dict, d: Dist, keep: int) -> None:
    """All ranks call this (their RNG states are gathered); rank 0 writes."""
    rngs = [None] * d.world
    if d.on:
        dist.all_gather_object(rngs, _rng_state(d.device))
    else:
        rngs[0] = _rng_state(d.device)
    if not d.main:
        return
    from safetensors.torch import save_file

    root = out_dir / CHECKPOINTS
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {n: p.detach().to("cpu").contiguous() for n, p in trainable_params(model).items()}
    save_file(weights, tmp / WEIGHTS_FILE)
    torch.save({**state, "rng": rngs}, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    if keep > 0:
        steps = sorted(int(m.group(1)) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)))
        for old in steps[:-keep]:
            shutil.rmtree(root / f"step-{old}", ignore_errors=True)


def load_checkpoint(path: Path, model, d: Dist) -> dict:
    from safetensors.torch import load_file

    weights = load_file(path / WEIGHTS_FILE)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    trainable = set(trainable_params(model))
    if unexpected or (trainable - set(weights)):
        raise ValueError(f"{path} does not fit this model (LoRA setting changed?): unexpected {unexpected[:3]}, "
                         f"missing {sorted(trainable - set(weights))[:3]}")
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    rngs = state["rng"]
    if len(rngs) == d.world:
        _set_rng_state(rngs[d.rank], d.device)
    else:
        warnings.warn(f"{path} was written by {len(rngs)} processes, not {d.world}: RNG streams restart")
    return state
