"""LoRA adapters (peft) on the attention projections, merged back into plain weights at the end.

Its own module because peft is optional: it is imported only when ``FinetuneConfig.lora`` is set, and
the final model is always a plain transformers directory the ONNX exporter takes unchanged.
"""

from __future__ import annotations

from settle.trainer.finetune.config import FinetuneConfig


def add_lora(model, config: FinetuneConfig):
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


def merge_lora(model):
    """The base model with the adapters folded into its weights (peft's ``merge_and_unload``)."""
    return model.merge_and_unload()
