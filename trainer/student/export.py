"""Export a transformers causal LM directory to the sampler's ONNX graph (shared-prefix layout).

The graph is ``settle.trainer.student.shared_prefix.SharedPrefixLM`` traced by the TorchScript exporter
(``dynamo=False``, opset 17) with every batch and length axis dynamic. One graph serves prefill
(no past, and a one-position prefix masked off, because ONNX Reshape cannot take a
zero-length axis: ``present`` is then the prompt's cache) and decode (that cache bound as the
prefix, once per example, while each of the example's k rows grows its own suffix).

Graph I/O (E=examples, N=rows=E*k example-major, S=new tokens, P=prefix length, T=suffix past,
H=kv heads, D=head dim, K=top_k):
  inputs  input_ids[N,S] int64, position_ids[N,S] int64, prefix_mask[E,P] int64,
          suffix_mask[N,T+S] int64, top_k[] int64,
          prefix.{i}.key/value[E,H,P,D], past.{i}.key/value[N,H,T,D] (model dtype)
  outputs top_logits[N,K] float32 (last position, descending), top_ids[N,K] int64,
          present.{i}.key/value[N,H,T+S,D]

CLI: ``python -m settle.trainer.student.export MODEL_DIR OUT_DIR [--dtype fp16] [--verify]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import warnings
from pathlib import Path

from settle.streams.contracts.student_dir import CONFIG_FILE, GATHER_FILE, GRAPH_FORMAT, MODEL_FILE, cache_names

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


def _cache_dims(config) -> tuple[int, int, int]:
    layers = config.num_hidden_layers
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return layers, kv_heads, head_dim


def _example_inputs(config, dtype, device, examples: int = 2, per: int = 2, new: int = 3,
                    prefix: int = 5, past: int = 2):
    """Trace inputs with padded masks and non-empty prefix and past, so that no shape or mask
    special case gets baked into the trace."""
    import torch

    layers, kv_heads, head_dim = _cache_dims(config)
    rows = examples * per
    ids = torch.randint(0, config.vocab_size, (rows, new), device=device)
    prefix_mask = torch.ones(examples, prefix, dtype=torch.int64, device=device)
    prefix_mask[0, :2] = 0
    suffix_mask = torch.ones(rows, past + new, dtype=torch.int64, device=device)
    suffix_mask[1, 0] = 0
    pos = torch.arange(new, device=device).repeat(rows, 1) + prefix + past
    top_k = torch.tensor(7, device=device)
    kv = [torch.randn(examples, kv_heads, prefix, head_dim, dtype=dtype, device=device) for _ in range(2 * layers)]
    kv += [torch.randn(rows, kv_heads, past, head_dim, dtype=dtype, device=device) for _ in range(2 * layers)]
    return (ids, pos, prefix_mask, suffix_mask, top_k, *kv)


def export_onnx(
    model_dir: str | Path,
    out_dir: str | Path,
    dtype: str = "fp32",
    device: str | None = None,
    opset: int = 17,
) -> Path:
    """Export ``model_dir`` to ``out_dir/model.onnx`` (+ ``onnx_config.json`` and tokenizer files).

    ``dtype`` is the graph's float type: fp32 for CPU, fp16 for GPU serving (bf16 checkpoints are
    cast). ``device`` defaults to cuda for fp16 when available. Graphs over ~1.8 GB are written
    with external data (``model.onnx.data``).
    """
    import onnx
    import torch
    from transformers import AutoModelForCausalLM

    from settle.trainer.student.shared_prefix import SharedPrefixLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    tdtype = _torch_dtype(dtype)
    if device is None:
        device = "cuda" if tdtype != torch.float32 and torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=tdtype).to(device).eval()
    config = model.config
    graph = SharedPrefixLM(model).eval()
    layers, kv_heads, head_dim = _cache_dims(config)
    prefix_names, past_names, present_names = cache_names(layers)
    dyn: dict[str, dict[int, str]] = {
        "input_ids": {0: "rows", 1: "new"},
        "position_ids": {0: "rows", 1: "new"},
        "prefix_mask": {0: "examples", 1: "prefix"},
        "suffix_mask": {0: "rows", 1: "total"},
        "top_logits": {0: "rows", 1: "k"},
        "top_ids": {0: "rows", 1: "k"},
    }
    dyn.update({n: {0: "examples", 2: "prefix"} for n in prefix_names})
    dyn.update({n: {0: "rows", 2: "past"} for n in past_names})
    dyn.update({n: {0: "rows", 2: "total"} for n in present_names})

    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        # TracerWarnings about shape-derived Python values are expected here: the checks that
        # matter (dynamic axes, padded masks, k rows per example) are in verify_export and tests.
        warnings.simplefilter("ignore")
        tmp_path = Path(tmp) / MODEL_FILE
        torch.onnx.export(
            graph,
            _example_inputs(config, tdtype, device),
            str(tmp_path),
            input_names=["input_ids", "position_ids", "prefix_mask", "suffix_mask", "top_k",
                         *prefix_names, *past_names],
            output_names=["top_logits", "top_ids", *present_names],
            dynamic_axes=dyn,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
        del model, graph
        # The exporter writes >2 GB models as many external files; measure on disk, since
        # ByteSize() itself fails past protobuf's 2 GiB limit.
        big = sum(f.stat().st_size for f in Path(tmp).iterdir()) > EXTERNAL_DATA_THRESHOLD
        proto = onnx.load(str(tmp_path))  # pulls in external data the exporter may have written
        for f in (out / MODEL_FILE, out / EXTERNAL_DATA_FILE):
            f.unlink(missing_ok=True)
        onnx.save_model(
            proto,
            str(out / MODEL_FILE),
            save_as_external_data=big,
            all_tensors_to_one_file=True,
            location=EXTERNAL_DATA_FILE,
        )
    write_gather_graph(out / GATHER_FILE, layers, dtype)
    _write_side_files(Path(model_dir), out, config, dtype, layers, kv_heads, head_dim)
    return out / MODEL_FILE


def write_gather_graph(path: Path, num_layers: int, dtype: str) -> None:
    """A graph that keeps some batch entries of all 2 x layers cache tensors (Gather on axis 0):
    the sampler drops finished rows (suffix caches) and examples (prefixes) with it, so the caches
    never leave the device."""
    import onnx
    from onnx import TensorProto, helper

    elem = TensorProto.FLOAT16 if dtype == "fp16" else TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("index", TensorProto.INT64, ["kept"])]
    outputs, nodes = [], []
    for j in range(2 * num_layers):
        inputs.append(helper.make_tensor_value_info(f"x.{j}", elem, ["batch", "heads", f"length_{j}", "head_dim"]))
        outputs.append(helper.make_tensor_value_info(f"y.{j}", elem, None))
        nodes.append(helper.make_node("Gather", [f"x.{j}", "index"], [f"y.{j}"], axis=0))
    graph = helper.make_graph(nodes, "gather", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save_model(model, str(path))


def _write_side_files(model_dir: Path, out: Path, config, dtype, layers, kv_heads, head_dim) -> None:
    for name in TOKENIZER_FILES:
        if (model_dir / name).exists():
            shutil.copy2(model_dir / name, out / name)
    eos = config.eos_token_id
    info = {
        "graph": GRAPH_FORMAT,
        "num_layers": layers,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "dtype": DTYPES[dtype],
        "vocab_size": config.vocab_size,
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
    from settle.trainer.student.build import STOP_TOKENS

    specials = _special_tokens(out)
    ids = [specials[t] for t in STOP_TOKENS if t in specials]
    if not ids:  # a foreign tokenizer: fall back to the model's eos id(s)
        ids = list(eos) if isinstance(eos, list) else ([eos] if eos is not None else [])
    return ids


def verify_export(
    model_dir: str | Path,
    onnx_dir: str | Path,
    prompt_len: int = 12,
    examples: int = 2,
    per_example: int = 3,
    steps: int = 3,
    seed: int = 0,
    device: str = "cpu",
) -> float:
    """Max |logit_onnx - logit_transformers| over a padded prefill and ``steps`` shared-prefix
    decode steps, each row checked against transformers run on that row's whole sequence.

    ``top_k`` is fed as the vocabulary size, so the graph's full sorted row is compared: both the
    values in order and transformers' logits gathered at the graph's ids. Example 0 is
    left-padded by 3 tokens (mask and position path); each example has ``per_example`` rows
    drawing different tokens (the prefix is shared, the suffixes are not). The transformers model
    runs in the graph's dtype on ``device`` (cpu, or cuda with ONNX Runtime's CUDA provider).
    Expect ~1e-6 for fp32 graphs and ~1e-2 for fp16 ones.
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
    sess = ort.InferenceSession(str(Path(onnx_dir) / MODEL_FILE), providers=providers)
    if sess.get_providers()[0] != ("CUDAExecutionProvider" if device == "cuda" else providers[0]):
        raise RuntimeError(f"ONNX Runtime did not take the {device} provider")
    prefix_names, past_names, _ = cache_names(info["num_layers"])
    np_dtype = np.float16 if info["dtype"] == "float16" else np.float32
    vocab, h, d = info["vocab_size"], info["num_kv_heads"], info["head_dim"]
    rows = examples * per_example
    top_k = np.array(vocab, dtype=np.int64)

    def reference(seqs: list[list[int]]) -> np.ndarray:
        with torch.no_grad():
            return np.stack([
                model(input_ids=torch.tensor([q], device=device)).logits[0, -1].float().cpu().numpy() for q in seqs
            ])

    def diff(out: list, ref: np.ndarray) -> float:
        values, ids = out[0], out[1]
        in_order = np.abs(values - -np.sort(-ref, axis=1)).max()
        at_ids = np.abs(values - np.take_along_axis(ref, ids, axis=1)).max()
        return float(max(in_order, at_ids))

    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (examples, prompt_len))
    mask = np.ones((examples, prompt_len), np.int64)
    mask[0, :3] = 0
    prompts = [list(ids[e][mask[e].astype(bool)]) for e in range(examples)]
    # Prefill: no past, and a one-position prefix that is masked off (ONNX Reshape cannot take a
    # zero-length prefix axis).
    empty = {n: np.zeros((examples, h, 1 if n in prefix_names else 0, d), np_dtype) for n in prefix_names + past_names}
    out = sess.run(None, {
        "input_ids": ids, "position_ids": np.clip(mask.cumsum(1) - 1, 0, None),
        "prefix_mask": np.zeros((examples, 1), np.int64), "suffix_mask": mask, "top_k": top_k, **empty,
    })
    worst = diff(out, reference(prompts))
    prefix = dict(zip(prefix_names, out[2:]))
    seqs = [list(prompts[r // per_example]) for r in range(rows)]
    past = {n: np.zeros((rows, h, 0, d), np_dtype) for n in past_names}
    for step in range(steps):
        tok = rng.integers(0, vocab, (rows, 1))
        for r in range(rows):
            seqs[r].append(int(tok[r, 0]))
        out = sess.run(None, {
            "input_ids": tok, "position_ids": np.array([[len(q) - 1] for q in seqs]),
            "prefix_mask": mask, "suffix_mask": np.ones((rows, step + 1), np.int64), "top_k": top_k,
            **prefix, **past,
        })
        worst = max(worst, diff(out, reference(seqs)))
        past = dict(zip(past_names, out[2:]))
    return worst


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("out_dir")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--device", default=None, help="cpu|cuda (default: cuda for fp16/bf16 if present)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--verify", action="store_true", help="compare logits with transformers")
    p.add_argument("--verify-device", default="cpu", help="cpu|cuda for --verify")
    a = p.parse_args(argv)
    path = export_onnx(a.model_dir, a.out_dir, a.dtype, a.device, a.opset)
    print(f"wrote {path}")
    if a.verify:
        diff = verify_export(a.model_dir, a.out_dir, device=a.verify_device)
        print(f"max |logits diff| = {diff:.3e}")


if __name__ == "__main__":
    main()
