"""Where a run starts from: a plain transformers directory, a published model directory, a previous run."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from settle.trainer.finetune.model import resolve_model_dir  # noqa: E402


def test_starts_from_a_published_dir_or_a_previous_run(tmp_path):
    for sub in ("plain", "published/hf", "run/model"):
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / "config.json").write_text("{}")
    assert resolve_model_dir(tmp_path / "plain") == tmp_path / "plain"
    assert resolve_model_dir(tmp_path / "published") == tmp_path / "published" / "hf"
    assert resolve_model_dir(tmp_path / "run") == tmp_path / "run" / "model"
    with pytest.raises(FileNotFoundError):
        resolve_model_dir(tmp_path)
