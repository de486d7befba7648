"""The first student: CPU training on simulated sessions, shipped as a small artifact, cached.

A random student solves nothing, so every example would be "too hard" and the
loop would have nothing to start from. The bootstrap teaches a tiny model the
output format and the easy part of the task on every changed settled example of
a simulation whose seed differs from the demo's. Targets use the prompt
module's insertion form where the edit is an insertion at the cursor (most typed
edits), so the model writes only the new text instead of copying the region back.

The recipe (``BootstrapRecipe``) names everything the result depends on; its key
names the cache entry. Training it takes tens of minutes on a loaded 2-core
machine, more than a first ``make run`` should, so the default recipe's weights
ship as ``artifacts/bootstrap-<shape>-<key>.tar.gz`` with a ``.sha256`` next to
it: ``bootstrap_student`` unpacks it (checksum verified, ONNX exported locally)
and trains only when no artifact matches the recipe. Rebuild it with one command::

    .venv/bin/python -m settle.trainer.student.bootstrap --recipe default

(CPU torch can differ in the last bits between machines, so a rebuild gives a
student of the same recipe, not necessarily the same checksum).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import msgspec

from settle.schemas.codecs import encode
from settle.streams.contracts.prompt import inserted_at_cursor
from settle.streams.contracts.student_dir import GraphFormatError, read_export_info
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate
from settle.trainer.data.pairs import TrainingPair, render, tokenize_pairs
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
    #: the prompt module's output format the targets are rendered in (2: insertion form at the
    #: cursor, else whole region); part of the cache key, so a format change retrains
    output_format: int = 2
    #: curriculum, second phase (0 steps = none): continue from the first phase's student on fresh
    #: sessions (another seed), only examples whose target has at most ``phase2_max_target_tokens``
    #: tokens (short edits, where a small student can get the edit right, not just closer)
    phase2_steps: int = 400
    phase2_sessions: int = 400
    phase2_seed: int = 124
    phase2_lr: float = 1e-3
    phase2_max_target_tokens: int = 48
    #: curriculum, third phase (0 steps = none): continue from the second phase's student on many
    #: fresh sessions, short targets only (at most ``phase3_max_target_tokens``), plus with
    #: ``phase3_first_lines`` the first line of every longer insertion as a target of its own (the
    #: line the user was completing when the prediction was requested: the part of an edit a small
    #: student can get right, and the part that decides whether a sample comes within the band's
    #: solve threshold)
    phase3_steps: int = 0
    phase3_sessions: int = 2000
    phase3_seed: int = 125
    phase3_lr: float = 1e-3
    phase3_max_target_tokens: int = 32
    phase3_first_lines: bool = True

    def key(self) -> str:
        fields = asdict(self)
        # a recipe without a later phase keeps the key it had before that phase existed
        for phase in (3, 2):
            if not fields[f"phase{phase}_steps"]:
                fields = {k: v for k, v in fields.items() if not k.startswith(f"phase{phase}_")}
        return hashlib.blake2b(json.dumps(fields, sort_keys=True).encode(), digest_size=6).hexdigest()

    def first_phase(self) -> BootstrapRecipe:
        return replace(self, phase2_steps=0, phase3_steps=0)

    def previous_phase(self) -> BootstrapRecipe:
        """The recipe this one continues from (ValueError for a one-phase recipe)."""
        if self.phase3_steps:
            return replace(self, phase3_steps=0)
        if self.phase2_steps:
            return self.first_phase()
        raise ValueError("a one-phase recipe continues from nothing")


#: artifacts shipped with the repository (absent from an installed wheel: then it trains)
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
#: recipes ``python -m settle.trainer.student.bootstrap --recipe NAME`` builds
RECIPES: dict[str, BootstrapRecipe] = {"default": BootstrapRecipe(), "phase3": BootstrapRecipe(phase3_steps=800)}


class ArtifactChecksumError(RuntimeError):
    """A shipped artifact does not match its recorded checksum."""


def artifact_name(recipe: BootstrapRecipe) -> str:
    return f"bootstrap-{recipe.shape}-{recipe.key()}"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bootstrap_student(
    cache: Path, recipe: BootstrapRecipe = BootstrapRecipe(), *, progress: bool = True,
    artifacts: Path | None = ARTIFACTS, work: Path | None = None,
) -> Path:
    """Model directory (ONNX at the top, weights in hf/) of the bootstrap student.

    From the cache; else from the shipped artifact of this recipe (checksum verified);
    else trained here (and cached). ``work``: where continued phases keep their run
    directories (checkpoints, ``train_log.jsonl``), so a killed rebuild resumes and
    its progress can be watched; by default a temporary directory.
    """
    dest = cache / artifact_name(recipe)
    if (dest / "model.onnx").exists():
        try:
            read_export_info(dest)
        except GraphFormatError:  # cached before the graph layout changed: the weights are good
            export_onnx(dest / "hf", dest)
        return dest
    tarball = artifacts / f"{artifact_name(recipe)}.tar.gz" if artifacts is not None else None
    if tarball is not None and tarball.exists():
        return _unpack(tarball, dest)
    if recipe.phase2_steps or recipe.phase3_steps:
        if recipe.phase3_steps and not recipe.phase2_steps:
            raise ValueError("phase 3 continues from phase 2: set phase2_steps too")
        previous = bootstrap_student(cache, recipe.previous_phase(), progress=progress, artifacts=artifacts, work=work)
        return _train_next_phase(recipe, previous, dest, progress=progress, work=work)
    return _train(recipe, dest, progress=progress)


def _unpack(tarball: Path, dest: Path) -> Path:
    want = tarball.with_name(tarball.name + ".sha256").read_text().split()[0]
    got = sha256_of(tarball)
    if got != want:
        raise ArtifactChecksumError(f"{tarball}: sha256 {got}, expected {want}")
    with tempfile.TemporaryDirectory(prefix="settle-bootstrap-") as tmp:
        work = Path(tmp) / "unpacked"
        with tarfile.open(tarball, "r:gz") as tar:
            tar.extractall(work, filter="data")
        staged = make_model_dir(Path(tmp) / "staged", hf_dir=work / "hf")
        shutil.copy(work / "bootstrap.json", staged / "bootstrap.json")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, dest)
    return dest


def pack_artifact(model_dir: Path, artifacts: Path, recipe: BootstrapRecipe) -> Path:
    """Write ``<artifacts>/<name>.tar.gz`` (hf weights, tokenizer, recipe; byte-reproducible
    from the same files) and its ``.sha256``; returns the tarball."""
    artifacts.mkdir(parents=True, exist_ok=True)
    tarball = artifacts / f"{artifact_name(recipe)}.tar.gz"
    files = sorted(p for p in (model_dir / "hf").rglob("*") if p.is_file()) + [model_dir / "bootstrap.json"]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in files:
            info = tarfile.TarInfo(str(f.relative_to(model_dir)))
            data = f.read_bytes()
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    with open(tarball, "wb") as out, gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    tarball.with_name(tarball.name + ".sha256").write_text(f"{sha256_of(tarball)}  {tarball.name}\n")
    return tarball


def _train(recipe: BootstrapRecipe, dest: Path, *, progress: bool) -> Path:
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


def first_line_of_insertion(inserted: str) -> str | None:
    """The insertion up to the end of its first non-blank line, or None when that is all of it.

    Leading newlines and indentation belong to the line they open (typing ``\\n    foo()`` is one line).
    """
    body = inserted.lstrip(" \t\n")
    cut = body.find("\n")
    if cut == -1:
        return None
    return inserted[: len(inserted) - len(body) + cut]


def _phase_pairs(recipe: BootstrapRecipe, phase: int, tokenizer: object) -> list[TrainingPair]:
    """Training pairs of a continued phase: fresh sessions, targets of at most the phase's token cap."""
    sessions, seed, max_target = (
        (recipe.phase2_sessions, recipe.phase2_seed, recipe.phase2_max_target_tokens) if phase == 2
        else (recipe.phase3_sessions, recipe.phase3_seed, recipe.phase3_max_target_tokens)
    )
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=sessions, seed=seed))]
    examples = [e for e in settle_records(enumerate(lines)).examples if e.original_text != e.settled_text]
    if phase == 3 and recipe.phase3_first_lines:
        extra = []
        for e in examples:
            inserted = inserted_at_cursor(e)
            first = first_line_of_insertion(inserted) if inserted else None
            if first is not None:
                c = e.cursor
                settled = e.original_text[:c] + first + e.original_text[c:]
                extra.append(msgspec.structs.replace(e, settled_text=settled, id=f"{e.id}:first-line"))
        examples += extra
    pairs = [render(e) for e in examples]
    return [pr for pr in pairs if len(tokenizer(pr.target)["input_ids"]) <= max_target]  # type: ignore[operator]


def _train_next_phase(
    recipe: BootstrapRecipe, previous: Path, dest: Path, *, progress: bool, work: Path | None,
) -> Path:
    phase = 3 if recipe.phase3_steps else 2
    steps, lr = (recipe.phase3_steps, recipe.phase3_lr) if phase == 3 else (recipe.phase2_steps, recipe.phase2_lr)
    tokenizer = load_tokenizer(previous / "hf")
    pairs = _phase_pairs(recipe, phase, tokenizer)
    with tempfile.TemporaryDirectory(prefix="settle-bootstrap-") as tmp:
        run_dir = Path(tmp) / "run" if work is None else work / f"{artifact_name(recipe)}-phase{phase}"
        items = tokenize_pairs(pairs, tokenizer, recipe.max_tokens)
        ft = FinetuneConfig(
            steps=steps, batch_size=recipe.batch_size, lr=lr, min_lr=lr / 10,
            warmup_steps=min(10 if phase == 2 else 50, steps // 10),
            checkpoint_every=0 if work is None else 100, keep_checkpoints=2,
        )
        result = finetune(previous / "hf", list(items), run_dir, ft, resume=work is not None, progress=progress)
        staged = make_model_dir(Path(tmp) / "out", hf_dir=result.model_dir)
        (staged / "bootstrap.json").write_text(json.dumps({
            "recipe": asdict(recipe), "previous_phase": previous.name, f"phase{phase}_examples": len(items),
            "final_loss": result.final_train_loss,
        }) + "\n")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, dest)
    return dest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train a bootstrap recipe and write its artifact (tar.gz + sha256).")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="default")
    ap.add_argument("--out", type=Path, default=ARTIFACTS, help="artifacts directory")
    ap.add_argument("--cache", type=Path, default=Path("var/cache"), help="where the trained student is cached")
    ap.add_argument("--work", type=Path, default=None,
                    help="keep continued phases' run directories here (checkpoints every 100 steps, train_log.jsonl): "
                         "a killed rebuild resumes from its last checkpoint")
    a = ap.parse_args(argv)
    recipe = RECIPES[a.recipe]
    student = bootstrap_student(a.cache, recipe, artifacts=None, work=a.work)  # never from an artifact: this builds one
    tarball = pack_artifact(student, a.out, recipe)
    print(f"{tarball} ({tarball.stat().st_size} bytes) sha256 {sha256_of(tarball)}")


if __name__ == "__main__":
    main()
