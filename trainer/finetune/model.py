"""The student being trained: where to load it from, which parameters train, the optimizer, the final save.

Its own module because these are the loop's only contacts with transformers' directory format: the
start may be a plain transformers directory, a published model directory (weights in ``hf/``) or a
previous run's ``model/``, and the final model is saved back in the dtype the student was stored in.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from settle.trainer.finetune.config import FINAL_MODEL, FinetuneConfig
from settle.trainer.finetune.lora import merge_lora


def resolve_model_dir(model_dir: Path) -> Path:
    """The transformers directory to start from: ``model_dir`` itself, the ``hf/`` of a published
    model directory (ONNX at the top, weights in ``hf/``, see student.make_model_dir), or the
    ``model/`` of a previous fine-tune's out_dir."""
    model_dir = Path(model_dir)
    for candidate in (model_dir, model_dir / "hf", model_dir / FINAL_MODEL):
        if (candidate / "config.json").exists():
            return candidate
    raise FileNotFoundError(f"{model_dir} holds no transformers model (no config.json in it, hf/ or model/)")


def stored_dtype(model_dir: Path) -> torch.dtype:
    """The dtype the student's weights were published in (the final model is saved back in it)."""
    config = json.loads((model_dir / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def trainable_params(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def make_optimizer(model, config: FinetuneConfig, device: torch.device) -> torch.optim.AdamW:
    params = list(trainable_params(model).values())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def save_final(model, tokenizer, path: Path, dtype: torch.dtype, lora: bool) -> None:
    """A plain transformers directory: LoRA merged into the base weights, the student's dtype."""
    if lora:
        model = merge_lora(model)
    model = model.to(dtype).eval()
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
