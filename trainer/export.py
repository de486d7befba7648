"""Export a transformers causal LM directory to one ONNX graph with an explicit KV cache.

Why one graph with flat cache tensors: the sampler (streams/sampler.py) prefills a prompt once
(past length 0), repeats the resulting cache k times and decodes all rows step by step feeding
``present.*`` back as ``past_key_values.*``. Neither torch exporter accepts a ``DynamicCache``
input, so a thin wrapper takes flat ``(k0, v0, k1, v1, ...)`` tensors and builds the cache inside;
the legacy TorchScript exporter (``dynamo=False``, opset 17) then traces it with dynamic axes.

Graph I/O (B=batch, S=new tokens, P=past length, H=kv heads, D=head dim):
  inputs  input_ids[B,S] int64, attention_mask[B,P+S] int64, position_ids[B,S] int64,
          past_key_values.{i}.key/value[B,H,P,D] (model dtype)
  outputs logits[B,1,V] float32 (last position; [B,S,V] with all_logits),
          present.{i}.key/value[B,H,P+S,D]

CLI: ``python -m settle.trainer.export MODEL_DIR OUT_DIR [--dtype fp16] [--verify]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import warnings
from pathlib import Path

ONNX_FILE = "model.onnx"
CONFIG_FILE = "onnx_config.json"
EXTERNAL_DATA_FILE = "model.onnx.data"
# Protobuf's hard limit is 2 GiB; stay clear of it.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)
# Graph float types. bf16 weights (most real students) are cast to fp16 for export: ONNX
# Runtime's bf16 kernel coverage is thin and numpy has no bf16 for the sampler's host side.
DTYPES = {"fp32": "float32", "fp16": "float16"}


def _torch_dtype(dtype: str):
    import torch

    return getattr(torch, DTYPES[dtype])


def cache_names(num_layers: int) -> tuple[list[str], list[str]]:
    """(past input names, present output names) in the flat k0, v0, k1, v1, ... order."""
    past, present = [], []
    for i in range(num_layers):
        for kv in ("key", "value"):
            past.append(f"past_key_values.{i}.{kv}")
            present.append(f"present.{i}.{kv}")
    return past, present


def _cache_dims(config) -> tuple[int, int, int]:
    layers = config.num_hidden_layers
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return layers, kv_heads, head_dim


def _wrapper(model, all_logits: bool):
    """A module with flat tensor I/O around ``model`` (builds the ``DynamicCache`` inside).

    Unless ``all_logits``, only the last position's logits are computed: a 1500-token prefill
    of a 152k-vocab model would otherwise materialise ~0.5-1 GB of logits nobody reads."""
    import torch
    from transformers import DynamicCache

    class FlatCacheLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(config=self.model.config)
            for i in range(len(past) // 2):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=0 if all_logits else 1,
            )
            flat = []
            for layer in out.past_key_values.layers:
                flat += [layer.keys, layer.values]
            # float32 logits whatever the graph dtype: the host samples in float32, and
            # casting on the device is cheaper than numpy's float16 conversion.
            return (out.logits.float(), *flat)

    return FlatCacheLM().eval()


def _example_inputs(config, dtype, device, batch: int = 2, seq: int = 3, past: int = 4):
    """Trace inputs with a padded mask and a non-empty past, so nothing shape- or mask-specific
    gets baked into the trace (transformers skips mask building for all-ones masks when not tracing)."""
    import torch

    layers, kv_heads, head_dim = _cache_dims(config)
    ids = torch.randint(0, config.vocab_size, (batch, seq), device=device)
    mask = torch.ones(batch, past + seq, dtype=torch.int64, device=device)
    mask[0, :2] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
    kv = [
        torch.randn(batch, kv_heads, past, head_dim, dtype=dtype, device=device)
        for _ in range(2 * layers)
    ]
    return (ids, mask, pos, *kv)


def export_onnx(
    model_dir: str | Path,
    out_dir: str | Path,
    dtype: str = "fp32",
    device: str | None = None,
    opset: int = 17,
    all_logits: bool = False,
) -> Path:
    """Export ``model_dir`` to ``out_dir/model.onnx`` (+ ``onnx_config.json`` and tokenizer files).

    ``dtype`` is the graph's float type: fp32 for CPU, fp16 for GPU serving (bf16 checkpoints are
    cast). Eager attention is used for the export: its mask is a finite large negative, so a
    fully masked row never turns into NaN. ``device`` defaults to cuda for fp16 when available.
    ``logits`` is float32 [B, 1, V] (last position) unless ``all_logits`` ([B, S, V], scoring).
    Graphs over ~1.8 GB are written with external data (``model.onnx.data``).
    """
    import onnx
    import torch
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    tdtype = _torch_dtype(dtype)
    if device is None:
        device = "cuda" if tdtype != torch.float32 and torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=tdtype, attn_implementation="eager"
    ).to(device).eval()
    config = model.config
    layers, kv_heads, head_dim = _cache_dims(config)
    past_names, present_names = cache_names(layers)
    dyn: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "seq"},
        "attention_mask": {0: "batch", 1: "total"},
        "position_ids": {0: "batch", 1: "seq"},
        "logits": {0: "batch", 1: "seq"},
    }
    dyn.update({n: {0: "batch", 2: "past"} for n in past_names})
    dyn.update({n: {0: "batch", 2: "total"} for n in present_names})

    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        # TracerWarnings about shape-derived Python values are expected here: the checks that
        # matter (dynamic past/seq/batch, padded masks) are in verify_export and the tests.
        warnings.simplefilter("ignore")
        tmp_path = Path(tmp) / ONNX_FILE
        torch.onnx.export(
            _wrapper(model, all_logits),
            _example_inputs(config, tdtype, device),
            str(tmp_path),
            input_names=["input_ids", "attention_mask", "position_ids", *past_names],
            output_names=["logits", *present_names],
            dynamic_axes=dyn,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
        del model
        # The exporter writes >2 GB models as many external files; measure on disk, since
        # ByteSize() itself fails past protobuf's 2 GiB limit.
        big = sum(f.stat().st_size for f in Path(tmp).iterdir()) > EXTERNAL_DATA_THRESHOLD
        proto = onnx.load(str(tmp_path))  # pulls in external data the exporter may have written
        for f in (out / ONNX_FILE, out / EXTERNAL_DATA_FILE):
            f.unlink(missing_ok=True)
        onnx.save_model(
            proto,
            str(out / ONNX_FILE),
            save_as_external_data=big,
            all_tensors_to_one_file=True,
            location=EXTERNAL_DATA_FILE,
        )
    _write_side_files(Path(model_dir), out, config, dtype, layers, kv_heads, head_dim, all_logits)
    return out / ONNX_FILE


def _write_side_files(
    model_dir: Path, out: Path, config, dtype, layers, kv_heads, head_dim, all_logits
) -> None:
    for name in TOKENIZER_FILES:
        if (model_dir / name).exists():
            shutil.copy2(model_dir / name, out / name)
    eos = config.eos_token_id
    info = {
        "num_layers": layers,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "dtype": DTYPES[dtype],
        "vocab_size": config.vocab_size,
        "logits": "all" if all_logits else "last",
        "model_type": config.model_type,
        "eos_token_id": eos,
        "pad_token_id": config.pad_token_id if config.pad_token_id is not None else eos,
        "special_tokens": _special_tokens(out),
        "stop_token_ids": _stop_ids(out, eos),
    }
    (out / CONFIG_FILE).write_text(json.dumps(info, indent=2))


def _special_tokens(out: Path) -> dict[str, int]:
    """Added (special) tokens of the tokenizer, name -> id; empty without a tokenizer."""
    path = out / "tokenizer.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {t["content"]: t["id"] for t in data.get("added_tokens", []) if t.get("special")}


def _stop_ids(out: Path, eos) -> list[int]:
    from settle.trainer.student import STOP_TOKENS

    specials = _special_tokens(out)
    ids = [specials[t] for t in STOP_TOKENS if t in specials]
    if not ids:  # a foreign tokenizer: fall back to the model's eos id(s)
        ids = list(eos) if isinstance(eos, list) else ([eos] if eos is not None else [])
    return ids


def verify_export(
    model_dir: str | Path,
    onnx_dir: str | Path,
    prompt_len: int = 12,
    batch: int = 2,
    seed: int = 0,
    device: str = "cpu",
) -> float:
    """Max |logits_onnx - logits_transformers| over a padded prefill and one cached decode step.

    The transformers model is loaded in the ONNX graph's dtype, on ``device`` (cpu, or cuda with
    ONNX Runtime's CUDA provider). Row 0 is left-padded by 3 tokens so the mask/position-id path
    is exercised too. Expect ~1e-5 for fp32 graphs and ~1e-2 for fp16 ones.
    """
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForCausalLM

    info = json.loads((Path(onnx_dir) / CONFIG_FILE).read_text())
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, info["dtype"]))
    model = model.to(device).eval()
    providers: list = ["CPUExecutionProvider"]
    if device == "cuda":
        ort.preload_dlls()
        # TF32 matmuls would cost ~1e-3 relative error: not what an export check should see.
        providers.insert(0, ("CUDAExecutionProvider", {"use_tf32": "0"}))
        torch.backends.cuda.matmul.allow_tf32 = False
    sess = ort.InferenceSession(str(Path(onnx_dir) / ONNX_FILE), providers=providers)
    if sess.get_providers()[0] != ("CUDAExecutionProvider" if device == "cuda" else providers[0]):
        raise RuntimeError(f"ONNX Runtime did not take the {device} provider")
    past_names, present_names = cache_names(info["num_layers"])
    np_dtype = np.float16 if info["dtype"] == "float16" else np.float32

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, info["vocab_size"], (batch, prompt_len), generator=g)
    mask = torch.ones(batch, prompt_len, dtype=torch.int64)
    mask[0, :3] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    nxt = torch.randint(0, info["vocab_size"], (batch, 1), generator=g)
    mask2 = torch.cat([mask, torch.ones(batch, 1, dtype=torch.int64)], dim=1)
    pos2 = pos[:, -1:] + 1

    on = {"device": device}
    with torch.no_grad():
        ref1 = model(
            input_ids=ids.to(**on), attention_mask=mask.to(**on), position_ids=pos.to(**on),
            use_cache=True,
        )
        ref2 = model(
            input_ids=nxt.to(**on), attention_mask=mask2.to(**on), position_ids=pos2.to(**on),
            past_key_values=ref1.past_key_values, use_cache=True,
        )
    empty = np.zeros((batch, info["num_kv_heads"], 0, info["head_dim"]), dtype=np_dtype)
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "position_ids": pos.numpy()}
    feed.update({n: empty for n in past_names})
    out1 = sess.run(None, feed)
    feed = {"input_ids": nxt.numpy(), "attention_mask": mask2.numpy(), "position_ids": pos2.numpy()}
    feed.update(dict(zip(past_names, out1[1:])))
    out2 = sess.run(None, feed)

    ref_logits = ref1.logits.float().cpu().numpy()
    real = mask.bool().numpy()  # padded positions' logits are meaningless on both sides
    if info.get("logits") == "last":
        ref_logits, real = ref_logits[:, -1:], real[:, -1:]
    d1 = np.abs(out1[0].astype(np.float32) - ref_logits)[real].max()
    d2 = np.abs(out2[0].astype(np.float32) - ref2.logits.float().cpu().numpy()).max()
    return float(max(d1, d2))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("out_dir")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--device", default=None, help="cpu|cuda (default: cuda for fp16/bf16 if present)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--all-logits", action="store_true", help="logits for every position")
    p.add_argument("--verify", action="store_true", help="compare logits with transformers")
    p.add_argument("--verify-device", default="cpu", help="cpu|cuda for --verify")
    a = p.parse_args(argv)
    path = export_onnx(a.model_dir, a.out_dir, a.dtype, a.device, a.opset, a.all_logits)
    print(f"wrote {path}")
    if a.verify:
        diff = verify_export(a.model_dir, a.out_dir, device=a.verify_device)
        print(f"max |logits diff| = {diff:.3e}")


if __name__ == "__main__":
    main()
