"""One trainer run: what arrived on `kept` since the last run becomes a candidate student.

read kept (own consumer group) -> dedupe -> stable held-out split -> fine-tune
from the current model -> export to ONNX -> evaluate candidate and current on
the same held-out set -> publish if not worse, else record why not -> commit
the offsets.

A run works in ``<registry>/<name>/.train-run/`` (not a temporary directory): it writes
down its batch (offsets, train and held-out examples, parent version) before fine-tuning,
and the fine-tune checkpoints there. A run killed before its commit leaves that directory;
the next run finds it, and when nothing was committed since and the parent is still the
live model, it resumes the same batch from the last checkpoint instead of step 0. The
directory is removed when a run ends (published, rejected or skipped) or turns out stale.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from settle.schemas.codecs import encode
from settle.schemas.examples import SettledExample
from settle.schemas.models import ModelPublished
from settle.streams.contracts.student_dir import write_manifest
from settle.streams.kafka.io import produce_dead_letters
from settle.streams.records import Consumed, dead_letter
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
#: a run's working directory under <registry>/<name>/ (kept across a kill, removed when the run ends)
WORK_DIR = ".train-run"

log = logging.getLogger("settle.trainer")


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
    finetune: FinetuneConfig = field(
        default_factory=lambda: FinetuneConfig(steps=60, batch_size=8, warmup_steps=5, checkpoint_every=10)
    )
    tolerance: GateTolerance = DEFAULT_TOLERANCE
    idle_s: float = 3.0

    @property
    def work_dir(self) -> Path:
        return self.registry / self.name / WORK_DIR


@dataclass
class RunReport:
    status: str  # "published", "rejected" or "skipped"
    reason: str
    message: ModelPublished | None = None
    new_examples: int = 0
    train_examples: int = 0
    eval_examples: int = 0
    #: fine-tuning step a killed run's checkpoint let this run continue from (None = from step 0)
    resumed_from_step: int | None = None


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


def _write_jsonl(path: Path, examples: list[SettledExample]) -> None:
    path.write_bytes(b"".join(encode(e) + b"\n" for e in examples))


def _save_state(work: Path, state: dict) -> None:
    tmp = work / "run.json.tmp"
    tmp.write_text(json.dumps(state))
    tmp.replace(work / "run.json")


def _pending_run(work: Path, group: str, parent_version: str, start: dict[int, int]) -> dict | None:
    """The killed run's batch, when it can be resumed: same group, parent and start offsets."""
    try:
        state = json.loads((work / "run.json").read_text())
    except (OSError, ValueError):
        return None
    starts = {int(p): o for p, o in state.get("start_offsets", {}).items()}
    if state.get("group") != group or state.get("parent_version") != parent_version or starts != start:
        return None
    return state


def train_once(settings: Settings, config: TrainConfig = TrainConfig(), *, progress: bool = True) -> RunReport:
    from settle.trainer.evaluate.heldout import evaluate, summary_dict
    from settle.trainer.finetune.loop import finetune
    from settle.trainer.student.build import load_tokenizer
    from settle.trainer.student.export import export_onnx

    group = config.group_id or trainer_group_id(settings)
    messages = asyncio.run(history(settings))
    parent_dir, parent_version = current_model(messages, config)
    batch = asyncio.run(read_kept(settings, group, idle_s=config.idle_s))
    work = config.work_dir
    pending = _pending_run(work, group, parent_version, batch.start_offsets)
    if pending is not None:
        # what the killed run had read: the same examples, so its checkpoints still apply;
        # records after its end offsets stay for the next run
        end_offsets = {int(p): o for p, o in pending["end_offsets"].items()}
        train = load_jsonl(work / "train.jsonl")
        held_out = load_jsonl(work / "heldout.jsonl")
        new_examples = int(pending["new_examples"])
        log.warning("resuming the killed run on kept offsets %s -> %s", batch.start_offsets, end_offsets)
    else:
        if work.exists():
            log.warning("discarding a stale trainer run directory %s", work)
            shutil.rmtree(work)
        end_offsets = dict(batch.end_offsets)
        if batch.undecodable:
            # the offsets move past them, so they go where an operator can find and replay them
            asyncio.run(produce_dead_letters(settings, [
            dead_letter(Consumed(settings.topic(KEPT), u.partition, u.offset, u.key, u.value), u.reason, u.error,
                        "train")
            for u in batch.undecodable
        ]))
        examples, _ = dedupe(batch.examples)
        new_examples = len(examples)
        if len(examples) < config.min_examples:
            return RunReport("skipped", f"{len(examples)} new kept examples < min_examples={config.min_examples}",
                             new_examples=len(examples))
        train, new_eval = split(examples, config.eval_fraction)
        held_out = _held_out(config, new_eval)
        if not train or not held_out:
            return RunReport("skipped", f"split left {len(train)} train / {len(held_out)} held-out examples",
                             new_examples=len(examples))
        work.mkdir(parents=True)
        _write_jsonl(work / "train.jsonl", train)
        _write_jsonl(work / "heldout.jsonl", held_out)
        state = {"group": group, "parent_version": parent_version, "new_examples": new_examples,
                 "start_offsets": batch.start_offsets, "end_offsets": end_offsets}
        _save_state(work, state)  # the batch is on disk before any fine-tuning step
    state = json.loads((work / "run.json").read_text())
    announced = next((m for m in messages if m.name == config.name and m.version == state.get("version")), None)
    if announced is not None:
        # killed between announcing its verdict and committing: only the commit is left to do
        asyncio.run(commit_kept(settings, group, end_offsets))
        shutil.rmtree(work)
        return RunReport(announced.status, announced.reason, announced, new_examples, announced.train_examples,
                         announced.eval_examples)

    tokenizer = load_tokenizer(parent_dir / "hf")
    items = tokenize_pairs([render(e) for e in train], tokenizer, config.max_tokens)
    result = finetune(parent_dir / "hf", list(items), work / "finetune", config.finetune, resume=True,
                      progress=progress)
    if (work / "onnx").exists():
        shutil.rmtree(work / "onnx")  # an export the kill interrupted
    export_onnx(result.model_dir, work / "onnx")
    new_summary = evaluate(work / "onnx", held_out, max_new_tokens=config.max_new_tokens)
    parent_summary = evaluate(parent_dir, held_out, max_new_tokens=config.max_new_tokens)
    ok, why = compare(new_summary, parent_summary, tolerance=config.tolerance)
    version = state.get("version") or next_version(config.registry, config.name)
    _save_state(work, {**state, "version": version})
    if (config.registry / config.name / version).exists():
        shutil.rmtree(config.registry / config.name / version)  # staged by the killed run, never announced
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
        data_offsets={p: (batch.start_offsets.get(p, 0), end) for p, end in end_offsets.items()},
        train_examples=len(items),
        eval_examples=len(held_out),
    )
    record(dest, message)
    asyncio.run(announce(settings, message))
    asyncio.run(commit_kept(settings, group, end_offsets))
    shutil.rmtree(work)
    return RunReport(message.status, why, message, new_examples, len(items), len(held_out),
                     resumed_from_step=result.resumed_from)


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
