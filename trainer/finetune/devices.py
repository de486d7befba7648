"""Where and in what precision the loop runs: the device, the autocast dtype, the torchrun process group.

Its own module so the loop reads the same on one CPU and on N GPUs: under ``torchrun`` (WORLD_SIZE,
RANK, LOCAL_RANK set) the process group is initialised (nccl on CUDA, gloo on CPU); otherwise ``Dist``
describes a world of one and ``all_reduce_sum`` is the identity. bf16/fp16 autocast on CUDA runs over
float32 master weights.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``config.dtype``; None means plain float32."""
    name = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(name, name)
    if name == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, not {name!r}")
    return None if name == "float32" else getattr(torch, name)


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we tear it down

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def setup_dist(device_name: str) -> Dist:
    env = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
    launched = all(k in os.environ for k in env)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank if launched else torch.cuda.current_device())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if launched and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device, owns)
    return Dist(0, 1, 0, device, False)


def all_reduce_sum(values: list[float], d: Dist) -> list[float]:
    if not d.on:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()
