"""The student directory: what the exporter and the publisher write and the scorer reads.

One place for the contract both sides of settle depend on, so the trainer
(writer) and the scorer (reader) cannot drift apart:

* ``model.onnx`` (+ external data) — the shared-prefix graph (layout ``GRAPH_FORMAT``,
  built by ``settle.trainer.student.shared_prefix``): inputs ``input_ids [N,T]``,
  ``position_ids [N,T]``, ``attention_mask``, per layer ``prefix.{i}.key|value [E,H,P,D]``
  (each example's prompt cache, once) and ``past.{i}.key|value [N,H,T',D]`` (each sample
  row's own cache), ``top_k``; outputs the top ``top_k`` logits and ids of the last position
  and ``present.{i}.key|value``.
* ``gather.onnx`` — selects rows/examples of the caches on the device (finished rows leave).
* ``onnx_config.json`` — ``graph`` (must equal ``GRAPH_FORMAT``), layers, heads, dtype, stop tokens.
* ``tokenizer.json`` — the student's tokenizer (special tokens of the prompt format kept whole).
* ``manifest.json`` — optional: ``{"name", "version"}`` of a published model; without it the
  version is a hash of the weights, so every decision still names the exact model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

#: the graph layout the sampler drives (``onnx_config.json`` "graph")
GRAPH_FORMAT = "shared-prefix/3"
MODEL_FILE = "model.onnx"
GATHER_FILE = "gather.onnx"
CONFIG_FILE = "onnx_config.json"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
#: files a directory must hold to be served
REQUIRED_FILES = (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE)


class GraphFormatError(ValueError):
    """An export made for another graph layout (re-export the student)."""


class ModelDirError(ValueError):
    """A directory that is not a usable exported student."""


def cache_names(num_layers: int) -> tuple[list[str], list[str], list[str]]:
    """(prefix input, past input, present output) names in the flat k0, v0, k1, v1, ... order."""
    flat = [(i, kv) for i in range(num_layers) for kv in ("key", "value")]
    return ([f"prefix.{i}.{kv}" for i, kv in flat], [f"past.{i}.{kv}" for i, kv in flat],
            [f"present.{i}.{kv}" for i, kv in flat])


def read_export_info(onnx_dir: str | Path) -> dict[str, Any]:
    """The export's ``onnx_config.json``; GraphFormatError if it was made for another layout."""
    info = json.loads((Path(onnx_dir) / CONFIG_FILE).read_text())
    if info.get("graph") != GRAPH_FORMAT:
        raise GraphFormatError(
            f"{onnx_dir} holds a {info.get('graph', 'flat-cache')!r} graph; this sampler needs "
            f"{GRAPH_FORMAT!r}: re-export it (python -m settle.trainer.student.export MODEL_DIR OUT_DIR)"
        )
    return info


def check_model_dir(model_dir: Path) -> None:
    """ModelDirError naming what is missing, with the command that makes a student."""
    missing = [n for n in REQUIRED_FILES if not (model_dir / n).exists()]
    if not model_dir.is_dir() or missing:
        raise ModelDirError(
            f"{model_dir} is not an exported student (missing {', '.join(missing) or 'directory'}); "
            "make one with `settle student --out DIR`"
        )


def write_manifest(model_dir: Path, name: str, version: str) -> None:
    """Name a published model so every scorer reports the same (name, version)."""
    (model_dir / MANIFEST_FILE).write_text(json.dumps({"name": name, "version": version}) + "\n")


def model_identity(model_dir: Path) -> tuple[str, str]:
    """(name, version) from the manifest, else (directory name, ``sha-`` + blake2b-64 of the graph files)."""
    manifest = model_dir / MANIFEST_FILE
    if manifest.exists():
        data = json.loads(manifest.read_text())
        return str(data["name"]), str(data["version"])
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(p.name for p in model_dir.iterdir() if p.name.startswith(MODEL_FILE)):
        with open(model_dir / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return model_dir.name, f"sha-{h.hexdigest()}"
