"""What a fine-tuning run is told (``FinetuneConfig``) and what it leaves behind (``FinetuneResult``, file names).

Its own module, free of torch, so the CLI and the trainer job can build a config without importing
the training stack. Run directory layout: ``out_dir/checkpoints/step-N/`` (``model.safetensors``,
``trainer_state.pt``), ``out_dir/model/`` (the final transformers directory), ``out_dir/train_log.jsonl``
and ``out_dir/finetune_config.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CHECKPOINTS = "checkpoints"
FINAL_MODEL = "model"
LOG_FILE = "train_log.jsonl"
CONFIG_FILE = "finetune_config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"


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
