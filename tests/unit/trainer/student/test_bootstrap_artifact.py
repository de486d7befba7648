"""The shipped bootstrap artifact: packed reproducibly, checksum verified, unpacked into the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from settle.trainer.student.bootstrap import (
    ArtifactChecksumError,
    BootstrapRecipe,
    artifact_name,
    bootstrap_student,
    pack_artifact,
    sha256_of,
)
from settle.trainer.student.build import make_model_dir

RECIPE = BootstrapRecipe(shape="tiny", steps=1, tokenizer_files=8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stands in for a trained bootstrap: a random tiny student with its bootstrap.json."""
    d = make_model_dir(tmp_path_factory.mktemp("m") / "student", shape="tiny", max_files=8)
    (d / "bootstrap.json").write_text(json.dumps({"recipe": "test"}) + "\n")
    return d


def test_pack_is_reproducible_and_unpacks_into_the_cache(trained: Path, tmp_path: Path) -> None:
    a = pack_artifact(trained, tmp_path / "a", RECIPE)
    b = pack_artifact(trained, tmp_path / "b", RECIPE)
    assert a.name == f"{artifact_name(RECIPE)}.tar.gz"
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / (a.name + ".sha256")).read_text().split()[0] == sha256_of(a)
    assert a.stat().st_size < 8 * 2**20

    cache = tmp_path / "cache"
    got = bootstrap_student(cache, RECIPE, artifacts=tmp_path / "a", progress=False)
    assert got == cache / artifact_name(RECIPE)
    assert (got / "model.onnx").exists() and (got / "bootstrap.json").exists()
    assert (got / "hf" / "model.safetensors").read_bytes() == (trained / "hf" / "model.safetensors").read_bytes()
    # cached now: the artifact is not needed again
    assert bootstrap_student(cache, RECIPE, artifacts=None, progress=False) == got


def test_a_tampered_artifact_is_refused(trained: Path, tmp_path: Path) -> None:
    tarball = pack_artifact(trained, tmp_path / "a", RECIPE)
    raw = bytearray(tarball.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    tarball.write_bytes(bytes(raw))
    with pytest.raises(ArtifactChecksumError):
        bootstrap_student(tmp_path / "cache", RECIPE, artifacts=tmp_path / "a", progress=False)
