"""One trainer run: what arrived on `kept` since the last run becomes a candidate student.

read kept (own consumer group) -> dedupe -> stable held-out split -> fine-tune
from the current model -> export to ONNX -> evaluate candidate and current on
the same held-out set -> publish if not worse, else record why not -> commit
the offsets. A run that dies before the commit is simply repeated next time.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from settle.schemas.codecs import encode
from settle.schemas.examples import SettledExample
from settle.schemas.models import ModelPublished
from settle.streams.contracts.student_dir import write_manifest
from settle.streams.kafka.io import dead_letter
from settle.streams.settings import KEPT, Settings
from settle.trainer.data.dedupe import dedupe
from settle.trainer.data.kept_topic import commit_kept, read_kept, trainer_group_id
from settle.trainer.data.pairs import render, tokenize_pairs
from settle.trainer.data.records import load_jsonl
from settle.trainer.data.split import split
from settle.trainer.evaluate.gate import DEFAULT_TOLERANCE, GateTolerance, compare
from settle.trainer.finetune.config import FinetuneConfig
from settle.trainer.publish.registry import announce, history, latest_published, next_version, now_ms, record, stage

EVAL_FILE = "eval.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    registry: Path = Path("var/models")
    name: str = "student"
    #: model version directory used when nothing is published yet
    bootstrap_dir: Path | None = None
    group_id: str | None = None
    #: fewer new examples than this: skip the run and leave the offsets for next time
    min_examples: int = 8
    eval_fraction: float = 0.2
    max_tokens: int = 1024
    max_new_tokens: int = 128
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(steps=60, batch_size=8, warmup_steps=5))
    tolerance: GateTolerance = DEFAULT_TOLERANCE
    idle_s: float = 3.0


@dataclass
class RunReport:
    status: str  # "published", "rejected" or "skipped"
    reason: str
    message: ModelPublished | None = None
    new_examples: int = 0
    train_examples: int = 0
    eval_examples: int = 0


def current_model(messages: list[ModelPublished], config: TrainConfig) -> tuple[Path, str]:
    """(version directory, version) of the live model, or the bootstrap student."""
    live = latest_published(messages, config.name)
    if live is not None:
        return Path(live.location), live.version
    if config.bootstrap_dir is None:
        raise RuntimeError("no published model and no bootstrap student: run `settle bootstrap` first")
    return config.bootstrap_dir, ""


def _held_out(config: TrainConfig, new_eval: list[SettledExample]) -> list[SettledExample]:
    """The held-out set grows across runs, so every candidate faces all earlier held-out data."""
    path = config.registry / config.name / EVAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    old = load_jsonl(path) if path.exists() else []
    seen = {e.id for e in old}
    fresh = [e for e in new_eval if e.id not in seen]
    with open(path, "ab") as f:
        for e in fresh:
            f.write(encode(e) + b"\n")
    return old + fresh


def train_once(settings: Settings, config: TrainConfig = TrainConfig(), *, progress: bool = True) -> RunReport:
    from settle.trainer.evaluate.heldout import evaluate, summary_dict
    from settle.trainer.finetune.loop import finetune
    from settle.trainer.student.build import load_tokenizer
    from settle.trainer.student.export import export_onnx

    group = config.group_id or trainer_group_id(settings)
    messages = asyncio.run(history(settings))
    parent_dir, parent_version = current_model(messages, config)
    batch = asyncio.run(read_kept(settings, group, idle_s=config.idle_s))
    if batch.undecodable:
        # the offsets move past them, so they go where an operator can find and replay them
        asyncio.run(dead_letter(settings, [
            (settings.topic(KEPT), u.partition, u.offset, u.key, u.value, u.reason, u.error) for u in batch.undecodable
        ], agent="train"))
    examples, _ = dedupe(batch.examples)
    if len(examples) < config.min_examples:
        return RunReport("skipped", f"{len(examples)} new kept examples < min_examples={config.min_examples}",
                         new_examples=len(examples))
    train, new_eval = split(examples, config.eval_fraction)
    held_out = _held_out(config, new_eval)
    if not train or not held_out:
        return RunReport("skipped", f"split left {len(train)} train / {len(held_out)} held-out examples",
                         new_examples=len(examples))

    tokenizer = load_tokenizer(parent_dir / "hf")
    items = tokenize_pairs([render(e) for e in train], tokenizer, config.max_tokens)
    with tempfile.TemporaryDirectory(prefix="settle-train-") as tmp:
        work = Path(tmp)
        result = finetune(parent_dir / "hf", list(items), work / "run", config.finetune, progress=progress)
        export_onnx(result.model_dir, work / "onnx")
        new_summary = evaluate(work / "onnx", held_out, max_new_tokens=config.max_new_tokens)
        parent_summary = evaluate(parent_dir, held_out, max_new_tokens=config.max_new_tokens)
        ok, why = compare(new_summary, parent_summary, tolerance=config.tolerance)
        version = next_version(config.registry, config.name)
        dest = stage(config.registry, config.name, version, result.model_dir, work / "onnx")
    message = ModelPublished(
        name=config.name,
        version=version,
        status="published" if ok else "rejected",
        location=str(dest.resolve()),
        created_at_ms=now_ms(),
        parent_version=parent_version,
        reason=why,
        metrics=summary_dict(new_summary),
        parent_metrics=summary_dict(parent_summary),
        data_offsets={p: (batch.start_offsets.get(p, 0), end) for p, end in batch.end_offsets.items()},
        train_examples=len(items),
        eval_examples=len(held_out),
    )
    record(dest, message)
    asyncio.run(announce(settings, message))
    asyncio.run(commit_kept(settings, group, batch.end_offsets))
    return RunReport(message.status, why, message, len(examples), len(items), len(held_out))


def publish_bootstrap(settings: Settings, config: TrainConfig, source: Path) -> ModelPublished:
    """Make a bootstrap student the first published version, so scorers and trainer start from it."""
    version = next_version(config.registry, config.name)
    dest = config.registry / config.name / version
    shutil.copytree(source, dest)
    write_manifest(dest, config.name, version)
    message = ModelPublished(
        name=config.name, version=version, status="published", location=str(dest.resolve()),
        created_at_ms=now_ms(), reason="bootstrap student",
    )
    record(dest, message)
    asyncio.run(announce(settings, message))
    return message
