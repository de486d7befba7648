"""The first student: a few minutes of CPU training on simulated sessions, cached.

A random student solves nothing, so every example would be "too hard" and the
loop would have nothing to start from. The bootstrap teaches a tiny model the
output format and the easy part of the task (rewrite the region it is shown)
on every changed settled example of a simulation whose seed differs from the
demo's. The result is cached under a name derived from its recipe, so `make
run` pays for it once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from settle.schemas.codecs import encode
from settle.streams.contracts.student_dir import GraphFormatError, read_export_info
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate
from settle.trainer.data.pairs import render, tokenize_pairs
from settle.trainer.finetune.config import FinetuneConfig
from settle.trainer.finetune.loop import finetune
from settle.trainer.student.build import load_tokenizer, make_model_dir
from settle.trainer.student.export import export_onnx


@dataclass(frozen=True)
class BootstrapRecipe:
    shape: str = "small"
    sessions: int = 80
    #: not the demo's seed: the bootstrap must not have seen the demo's sessions
    seed: int = 123
    steps: int = 300
    batch_size: int = 8
    lr: float = 3e-3
    max_tokens: int = 768
    tokenizer_files: int = 60

    def key(self) -> str:
        return hashlib.blake2b(json.dumps(asdict(self), sort_keys=True).encode(), digest_size=6).hexdigest()


def bootstrap_student(cache: Path, recipe: BootstrapRecipe = BootstrapRecipe(), *, progress: bool = True) -> Path:
    """Model directory (ONNX at the top, weights in hf/) of the bootstrap student, built if not cached."""
    dest = cache / f"bootstrap-{recipe.shape}-{recipe.key()}"
    if (dest / "model.onnx").exists():
        try:
            read_export_info(dest)
        except GraphFormatError:  # cached before the graph layout changed: the weights are good
            export_onnx(dest / "hf", dest)
        return dest
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=recipe.sessions, seed=recipe.seed))]
    examples = [e for e in settle_records(enumerate(lines)).examples if e.original_text != e.settled_text]
    with tempfile.TemporaryDirectory(prefix="settle-bootstrap-") as tmp:
        work = Path(tmp)
        base = make_model_dir(work / "base", shape=recipe.shape, max_files=recipe.tokenizer_files)
        tokenizer = load_tokenizer(base / "hf")
        items = tokenize_pairs([render(e) for e in examples], tokenizer, recipe.max_tokens)
        config = FinetuneConfig(
            steps=recipe.steps, batch_size=recipe.batch_size, lr=recipe.lr, min_lr=recipe.lr / 10,
            warmup_steps=min(20, recipe.steps // 10),
        )
        result = finetune(base / "hf", list(items), work / "run", config, resume=False, progress=progress)
        staged = make_model_dir(work / "out", hf_dir=result.model_dir)
        (staged / "bootstrap.json").write_text(
            json.dumps({"recipe": asdict(recipe), "examples": len(items), "final_loss": result.final_train_loss}) + "\n"
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, dest)
    return dest
