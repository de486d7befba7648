"""Fine-tune the student on tokenized items: one plain training loop, in the spirit of nanoGPT's train.py.

Items are dicts with ``input_ids`` and ``labels`` (lists of ints, same length) as trainer/dataset.py
makes them: ``labels`` holds the token id on target positions and -100 on prompt positions, so the
loss counts target tokens only (the model's own causal-LM loss shifts the labels and ignores -100).

What one optimizer step does (the whole loop is in ``finetune``):
  * the step takes ``grad_accum`` micro-batches of ``batch_size`` items each from a data stream that
    is a fixed function of (seed, step): epochs are seeded permutations of the items. Under torchrun
    the micro-batches are split among the ranks (``grad_accum`` must be a multiple of WORLD_SIZE), so
    a step sees the same items whatever the number of processes, and a resumed run needs no data
    loader state.
  * micro-batches are padded to their longest item (right padding: labels -100, attention_mask 0).
  * the loss is the sum of target-token losses divided by the number of target tokens in the whole
    step (all micro-batches, all ranks), so every target token weighs the same, however the tokens
    fall into micro-batches.
  * AdamW (weight decay on matrices only), gradient clipping, linear warmup then cosine decay to
    ``min_lr``; bf16/fp16 autocast on CUDA over float32 master weights (fp16 with a GradScaler).

Checkpoints: ``out_dir/checkpoints/step-N/`` holds the trainable weights (``model.safetensors``) and
``trainer_state.pt`` (optimizer, scheduler, grad scaler, every rank's RNG state, step, eval
history). They are written to a temporary directory and renamed, so a kill mid-write never leaves a
broken "latest" checkpoint. ``resume=True`` continues from the latest one; a resumed run ends with
the weights of an uninterrupted run. The final model is a plain transformers directory
``out_dir/model`` (LoRA adapters merged into the base weights) plus the tokenizer, in the dtype the
student was stored in, so the ONNX export works on it unchanged.

Distributed: under ``torchrun`` (WORLD_SIZE/RANK/LOCAL_RANK set) the process group is initialised
(nccl on CUDA, gloo on CPU) and the model wrapped in DistributedDataParallel; only rank 0 writes
checkpoints, the log and the final model. All ranks read the checkpoint on resume, so ``out_dir``
must be on a filesystem they share.

CLI: ``python -m settle.trainer.finetune.loop --model DIR --data items.jsonl --out DIR [--steps N ...]``
(also ``torchrun --nproc_per_node=N -m settle.trainer.finetune.loop ...``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torch.distributed as dist

IGNORE_INDEX = -100
CHECKPOINTS = "checkpoints"
FINAL_MODEL = "model"
LOG_FILE = "train_log.jsonl"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 1000  # optimizer steps in the whole run (resumed runs included)
    batch_size: int = 8  # items per micro-batch (per process)
    grad_accum: int = 1  # micro-batches per optimizer step, over all processes together
    lr: float = 3e-4  # peak learning rate, reached after warmup
    min_lr: float = 3e-5  # cosine decay ends here at the last step
    warmup_steps: int = 20
    weight_decay: float = 0.01  # on weight matrices only (not norms, biases)
    max_grad_norm: float = 1.0  # 0 = no clipping
    seed: int = 0
    eval_every: int = 0  # steps between eval passes; 0 = only at the end (when eval_items given)
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 2  # how many of the latest checkpoints stay on disk; 0 = all
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    dtype: str = "auto"  # compute dtype: auto (float32 on CPU, bf16 or fp16 on CUDA), float32, bfloat16, float16
    device: str = "auto"  # auto = cuda if available else cpu
    max_tokens: int | None = 2048  # items longer than this keep their last max_tokens tokens


@dataclass
class FinetuneResult:
    final_train_loss: float  # mean target-token loss of the last optimizer step
    eval_losses: list[tuple[int, float]]  # (step, mean target-token loss on eval_items)
    steps: int  # optimizer steps done in total (config.steps once finished)
    resumed_from: int | None  # the checkpoint step this call continued from
    wall_time_s: float  # this call's wall time
    out_dir: Path
    model_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.model_dir = self.out_dir / FINAL_MODEL


# ----------------------------------------------------------------------------------------------
# data


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


# ----------------------------------------------------------------------------------------------
# schedule, precision, devices


def lr_at(step: int, config: FinetuneConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine to min_lr."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / (config.warmup_steps + 1)
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


def _autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``config.dtype``; None means plain float32."""
    name = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(name, name)
    if name == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, not {name!r}")
    return None if name == "float32" else getattr(torch, name)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


@dataclass(frozen=True)
class _Dist:
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


def _setup_dist(device_name: str) -> _Dist:
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
        return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, device, owns)
    return _Dist(0, 1, 0, device, False)


def _all_reduce_sum(values: list[float], d: _Dist) -> list[float]:
    if not d.on:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------------------------------
# model


def resolve_model_dir(model_dir: Path) -> Path:
    """The transformers directory to start from: ``model_dir`` itself, the ``hf/`` of a published
    model directory (ONNX at the top, weights in ``hf/``, see student.make_model_dir), or the
    ``model/`` of a previous fine-tune's out_dir."""
    model_dir = Path(model_dir)
    for candidate in (model_dir, model_dir / "hf", model_dir / FINAL_MODEL):
        if (candidate / "config.json").exists():
            return candidate
    raise FileNotFoundError(f"{model_dir} holds no transformers model (no config.json in it, hf/ or model/)")


def _stored_dtype(model_dir: Path) -> torch.dtype:
    """The dtype the student's weights were published in (the final model is saved back in it)."""
    config = json.loads((model_dir / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def _add_lora(model, config: FinetuneConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _make_optimizer(model, config: FinetuneConfig, device: torch.device) -> torch.optim.AdamW:
    params = list(_trainable(model).values())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


# ----------------------------------------------------------------------------------------------
# loss


def _loss_sums(model, items: Sequence, batch_size: int, pad_id: int, autocast_dtype=None) -> tuple[float, int]:
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
                with _autocast(device, autocast_dtype):
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
    total, count = _loss_sums(model, list(items), batch_size, 0 if pad_id is None else pad_id)
    return total / count if count else float("nan")


# ----------------------------------------------------------------------------------------------
# checkpoints


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


def _save_checkpoint(out_dir: Path, step: int, model, state: dict, d: _Dist, keep: int) -> None:
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
    weights = {n: p.detach().to("cpu").contiguous() for n, p in _trainable(model).items()}
    save_file(weights, tmp / WEIGHTS_FILE)
    torch.save({**state, "rng": rngs}, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    if keep > 0:
        steps = sorted(int(m.group(1)) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)))
        for old in steps[:-keep]:
            shutil.rmtree(root / f"step-{old}", ignore_errors=True)


def _load_checkpoint(path: Path, model, d: _Dist) -> dict:
    from safetensors.torch import load_file

    weights = load_file(path / WEIGHTS_FILE)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    trainable = set(_trainable(model))
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


# ----------------------------------------------------------------------------------------------
# logging


class _Log:
    """Rank 0's JSONL log plus a rich progress bar; a no-op on other ranks."""

    def __init__(self, out_dir: Path, main: bool, progress: bool, start: int, total: int):
        self.main = main
        self.path = out_dir / LOG_FILE
        self.bar = None
        if not main:
            return
        # A resumed run rewrites the steps after its checkpoint: drop what the crashed run logged past it.
        if self.path.exists():
            kept = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln)["step"] <= start]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        self.file = open(self.path, "a")
        if progress:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("finetune"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            )
            self.task = self.bar.add_task("steps", total=total, completed=start, info="")
            self.bar.start()

    def write(self, record: dict, advance: bool = False) -> None:
        if not self.main:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.bar is not None:
            info = " ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step" and isinstance(v, float))
            self.bar.update(self.task, advance=1 if advance else 0, info=info)

    def close(self) -> None:
        if self.main:
            self.file.close()
            if self.bar is not None:
                self.bar.stop()


# ----------------------------------------------------------------------------------------------
# the loop


def finetune(
    model_dir: Path,
    items: list[dict],
    out_dir: Path,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    eval_items: list[dict] | None = None,
    resume: bool = True,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> FinetuneResult:
    """Fine-tune the student in ``model_dir`` on ``items``; write checkpoints and ``out_dir/model``.

    ``resume=True`` continues from the latest checkpoint in ``out_dir`` (``resume=False`` deletes
    old checkpoints and starts over). ``on_step(step, train_loss)`` is called on every rank after
    each optimizer step (step counts from 1), e.g. to report metrics.
    """
    from settle.trainer.student.build import load_student

    t0 = time.perf_counter()
    if config.steps < 1:
        raise ValueError("steps must be at least 1")
    out_dir = Path(out_dir)
    d = _setup_dist(config.device)
    try:
        if config.grad_accum % d.world:
            raise ValueError(f"grad_accum ({config.grad_accum}) counts micro-batches over all processes "
                             f"and must be a multiple of WORLD_SIZE ({d.world})")
        train = prepare_items(items, config.max_tokens)
        evals = prepare_items(eval_items, config.max_tokens) if eval_items else []
        if not train:
            raise ValueError("no training item has a target token")
        amp = _autocast_dtype(config.dtype, d.device)

        # Model: float32 master weights; LoRA adapters initialised under the seed (same on all ranks).
        torch.manual_seed(config.seed)
        start_dir = resolve_model_dir(model_dir)
        save_dtype = _stored_dtype(start_dir)
        model, tokenizer = load_student(start_dir, dtype="float32", device=str(d.device))
        if config.lora:
            model = _add_lora(model, config)
        model.train()
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

        optimizer = _make_optimizer(model, config, d.device)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, config) / config.lr)
        scaler = torch.amp.GradScaler(d.device.type, enabled=amp == torch.float16)
        torch.manual_seed(config.seed + d.rank)  # dropout streams differ per rank

        step, eval_losses, train_loss, resumed_from, saved_at = 0, [], float("nan"), None, None
        if d.main and not resume:
            shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
            (out_dir / LOG_FILE).unlink(missing_ok=True)
        ckpt = latest_checkpoint(out_dir) if resume else None
        if ckpt is not None:
            state = _load_checkpoint(ckpt, model, d)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            step = resumed_from = saved_at = state["step"]
            eval_losses = [tuple(e) for e in state["eval_losses"]]
            train_loss = state["train_loss"]
            if state["config"] != dataclasses.asdict(config):
                warnings.warn(f"resuming {ckpt} under a different config")
        if d.main:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "finetune_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))

        if d.on:
            from torch.nn.parallel import DistributedDataParallel

            ddp = DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
        else:
            ddp = model
        params = list(_trainable(model).values())
        per_rank = config.grad_accum // d.world
        log = _Log(out_dir, d.main, progress, step, config.steps)

        def evaluate() -> float:
            total, count = _loss_sums(model, evals[d.rank :: d.world], config.batch_size, pad_id, amp)
            total, count = _all_reduce_sum([total, count], d)
            return total / count

        def checkpoint() -> None:
            nonlocal saved_at
            state = {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "eval_losses": [list(e) for e in eval_losses],
                "train_loss": train_loss,
                "config": dataclasses.asdict(config),
            }
            _save_checkpoint(out_dir, step, model, state, d, config.keep_checkpoints)
            saved_at = step

        try:
            while step < config.steps:
                t_step = time.perf_counter()
                # This rank's micro-batches of this step: a fixed slice of the seeded item stream.
                first = step * config.grad_accum + d.rank * per_rank
                micro = [
                    collate([train[i] for i in stream_indices(len(train), config.seed, j * config.batch_size,
                                                              config.batch_size)], pad_id)
                    for j in range(first, first + per_rank)
                ]
                # Normalise by the step's target tokens over all ranks; DDP then averages the ranks'
                # gradients (divides by world), hence the world factor.
                (n_targets,) = _all_reduce_sum([sum(count_targets(b["labels"]) for b in micro)], d)
                denom = n_targets / d.world
                loss_sum = torch.zeros((), device=d.device)
                for k, batch in enumerate(micro):
                    batch = {name: t.to(d.device, non_blocking=True) for name, t in batch.items()}
                    sync = k == len(micro) - 1 or not d.on
                    with ddp.no_sync() if not sync else nullcontext():
                        with _autocast(d.device, amp):
                            loss = ddp(**batch, use_cache=False, num_items_in_batch=denom).loss
                        scaler.scale(loss).backward()
                    loss_sum += loss.detach().float()
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or float("inf"))
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                step += 1
                (train_loss,) = _all_reduce_sum([float(loss_sum)], d)
                train_loss /= d.world
                log.write({"step": step, "loss": train_loss, "lr": lr, "grad_norm": float(grad_norm),
                           "tokens": int(n_targets), "time_s": time.perf_counter() - t_step}, advance=True)
                if evals and config.eval_every and step % config.eval_every == 0:
                    eval_losses.append((step, evaluate()))
                    log.write({"step": step, "eval_loss": eval_losses[-1][1]})
                if on_step is not None:
                    on_step(step, train_loss)
                if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
                    checkpoint()

            if evals and (not eval_losses or eval_losses[-1][0] != step):
                eval_losses.append((step, evaluate()))
                log.write({"step": step, "eval_loss": eval_losses[-1][1]})
            if saved_at != step:
                checkpoint()
        finally:
            log.close()

        if d.main:
            _save_final(model, tokenizer, out_dir / FINAL_MODEL, save_dtype, config.lora)
        if d.on:
            dist.barrier()  # the final model exists before any rank returns
        return FinetuneResult(
            final_train_loss=train_loss,
            eval_losses=eval_losses,
            steps=step,
            resumed_from=resumed_from,
            wall_time_s=time.perf_counter() - t0,
            out_dir=out_dir,
        )
    finally:
        if d.owns_group:
            dist.destroy_process_group()


def _save_final(model, tokenizer, path: Path, dtype: torch.dtype, lora: bool) -> None:
    """A plain transformers directory: LoRA merged into the base weights, the student's dtype."""
    if lora:
        model = model.merge_and_unload()
    model = model.to(dtype).eval()
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


# ----------------------------------------------------------------------------------------------
# CLI


def read_items(path: Path) -> list[dict]:
    """Items from JSONL: one object per line with ``input_ids`` and ``labels`` (other keys ignored)."""
    with open(path) as f:
        return [{"input_ids": o["input_ids"], "labels": o["labels"]} for o in map(json.loads, f) if o]


def _config_args(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(FinetuneConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif f.name == "lora_target_modules":
            parser.add_argument(flag, nargs="+", default=list(f.default))
        elif f.name == "max_tokens":
            parser.add_argument(flag, type=int, default=f.default, help="0 = no limit")
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m settle.trainer.finetune.loop", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True, help="student directory (transformers format)")
    p.add_argument("--data", type=Path, required=True, help="training items, JSONL with input_ids/labels")
    p.add_argument("--out", type=Path, required=True, help="run directory: checkpoints/, model/, train_log.jsonl")
    p.add_argument("--eval-data", type=Path, help="evaluation items, JSONL")
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming from out/checkpoints")
    p.add_argument("--no-progress", action="store_true")
    _config_args(p)
    a = p.parse_args(argv)
    # Under torchrun, grad_accum must be a multiple of the world size: default to one micro-batch per rank.
    world = int(os.environ.get("WORLD_SIZE", 1))
    if "--grad-accum" not in (argv if argv is not None else sys.argv[1:]):
        a.grad_accum = max(a.grad_accum, world)
    values = {f.name: getattr(a, f.name) for f in dataclasses.fields(FinetuneConfig)}
    values["lora_target_modules"] = tuple(values["lora_target_modules"])
    values["max_tokens"] = values["max_tokens"] or None
    config = FinetuneConfig(**values)
    result = finetune(
        a.model, read_items(a.data), a.out, config,
        eval_items=read_items(a.eval_data) if a.eval_data else None,
        resume=not a.no_resume, progress=not a.no_progress,
    )
    if int(os.environ.get("RANK", 0)) == 0:
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(result).items()}
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
