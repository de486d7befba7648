"""Fine-tune the student on tokenized items: one plain training loop, in the spirit of nanoGPT's train.py.

Items are dicts with ``input_ids`` and ``labels`` (lists of ints, same length) as ``settle.trainer.data.pairs``
makes them: ``labels`` holds the token id on target positions and -100 on prompt positions, so the
loss counts target tokens only (the model's own causal-LM loss shifts the labels and ignores -100).

What one optimizer step does (the whole loop is ``finetune``, read top to bottom):
  * the step takes ``grad_accum`` micro-batches of ``batch_size`` items each from a data stream that
    is a fixed function of (seed, step) (``batches``). Under torchrun the micro-batches are split among
    the ranks (``grad_accum`` must be a multiple of WORLD_SIZE), so a step sees the same items whatever
    the number of processes, and a resumed run needs no data loader state.
  * micro-batches are padded to their longest item (right padding: labels -100, attention_mask 0).
  * the loss is the sum of target-token losses divided by the number of target tokens in the whole
    step (all micro-batches, all ranks), so every target token weighs the same, however the tokens
    fall into micro-batches.
  * AdamW (weight decay on matrices only), gradient clipping, linear warmup then cosine decay to
    ``min_lr`` (``schedule``); bf16/fp16 autocast on CUDA over float32 master weights, fp16 with a
    GradScaler (``devices``).

Checkpoints (``checkpoint``): ``resume=True`` continues from the latest one; a resumed run ends with the
weights of an uninterrupted run. The final model is a plain transformers directory ``out_dir/model``
(LoRA adapters merged into the base weights, ``lora``) plus the tokenizer, in the dtype the student was
stored in, so the ONNX export works on it unchanged (``model``).

Distributed: under ``torchrun`` the model is wrapped in DistributedDataParallel; only rank 0 writes
checkpoints, the log and the final model.

CLI: ``python -m settle.trainer.finetune --model DIR --data items.jsonl --out DIR [--steps N ...]``
(also ``torchrun --nproc_per_node=N -m settle.trainer.finetune ...``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from settle.trainer.finetune.batches import collate, count_targets, prepare_items, stream_indices
from settle.trainer.finetune.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from settle.trainer.finetune.config import (
    CHECKPOINTS,
    CONFIG_FILE,
    FINAL_MODEL,
    LOG_FILE,
    FinetuneConfig,
    FinetuneResult,
)
from settle.trainer.finetune.devices import all_reduce_sum, autocast, autocast_dtype, setup_dist
from settle.trainer.finetune.lora import add_lora
from settle.trainer.finetune.loss import loss_sums
from settle.trainer.finetune.model import make_optimizer, resolve_model_dir, save_final, stored_dtype, trainable_params
from settle.trainer.finetune.run_log import RunLog
from settle.trainer.finetune.schedule import lr_at

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune"]


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
    d = setup_dist(config.device)
    try:
        if config.grad_accum % d.world:
            raise ValueError(f"grad_accum ({config.grad_accum}) counts micro-batches over all processes "
                             f"and must be a multiple of WORLD_SIZE ({d.world})")
        train = prepare_items(items, config.max_tokens)
        evals = prepare_items(eval_items, config.max_tokens) if eval_items else []
        if not train:
            raise ValueError("no training item has a target token")
        amp = autocast_dtype(config.dtype, d.device)

        # Model: float32 master weights; LoRA adapters initialised under the seed (same on all ranks).
        torch.manual_seed(config.seed)
        start_dir = resolve_model_dir(model_dir)
        save_dtype = stored_dtype(start_dir)
        model, tokenizer = load_student(start_dir, dtype="float32", device=str(d.device))
        if config.lora:
            model = add_lora(model, config)
        model.train()
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

        optimizer = make_optimizer(model, config, d.device)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, config) / config.lr)
        scaler = torch.amp.GradScaler(d.device.type, enabled=amp == torch.float16)
        torch.manual_seed(config.seed + d.rank)  # dropout streams differ per rank

        step, eval_losses, train_loss, resumed_from, saved_at = 0, [], float("nan"), None, None
        if d.main and not resume:
            shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
            (out_dir / LOG_FILE).unlink(missing_ok=True)
        ckpt = latest_checkpoint(out_dir) if resume else None
        if ckpt is not None:
            state = load_checkpoint(ckpt, model, d)
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
            (out_dir / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2))

        if d.on:
            from torch.nn.parallel import DistributedDataParallel

            ddp = DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
        else:
            ddp = model
        params = list(trainable_params(model).values())
        per_rank = config.grad_accum // d.world
        log = RunLog(out_dir, d.main, progress, step, config.steps)

        def evaluate() -> float:
            total, count = loss_sums(model, evals[d.rank :: d.world], config.batch_size, pad_id, amp)
            total, count = all_reduce_sum([total, count], d)
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
            save_checkpoint(out_dir, step, model, state, d, config.keep_checkpoints)
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
                (n_targets,) = all_reduce_sum([sum(count_targets(b["labels"]) for b in micro)], d)
                denom = n_targets / d.world
                loss_sum = torch.zeros((), device=d.device)
                for k, batch in enumerate(micro):
                    batch = {name: t.to(d.device, non_blocking=True) for name, t in batch.items()}
                    sync = k == len(micro) - 1 or not d.on
                    with ddp.no_sync() if not sync else nullcontext():
                        with autocast(d.device, amp):
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
                (train_loss,) = all_reduce_sum([float(loss_sum)], d)
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
            save_final(model, tokenizer, out_dir / FINAL_MODEL, save_dtype, config.lora)
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
