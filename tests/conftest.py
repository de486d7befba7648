"""Shared fixtures: the real embedded broker, started once per test session."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# quiet output: no weight-loading bars from transformers and the hub in test logs
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from settle.streams.local.broker import EmbeddedBroker
from settle.streams.settings import Settings

_prefix_counter = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A Tansu broker on a free port; SETTLE_TEST_BOOTSTRAP points the tests at another one instead."""
    external = os.environ.get("SETTLE_TEST_BOOTSTRAP")
    if external:
        host, port = external.rsplit(":", 1)
        yield EmbeddedBroker(port=int(port), host=host)
        return
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    """Settings with topics of their own, so tests never see each other's records."""
    n = next(_prefix_counter)
    return Settings(
        bootstrap=broker.bootstrap,
        topic_prefix=f"t{os.getpid()}-{n}.",
        group_prefix=f"g{os.getpid()}-{n}",
        data_dir=tmp_path / "worker",
        partitions=4,
    )


@pytest.fixture(scope="session")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny student (own tokenizer, random weights) exported to ONNX, built once per session."""
    from settle.trainer.student.build import make_model_dir

    return make_model_dir(tmp_path_factory.mktemp("student") / "v0", shape="tiny", max_files=20)


@pytest.fixture(scope="session")
def bootstrapped_student() -> Path:
    """A small student trained briefly on simulated sessions: parses its output, solves little.

    Cached in var/cache (SETTLE_TEST_CACHE) so local reruns skip the ~1-2 min of training.
    """
    from settle.trainer.student.bootstrap import BootstrapRecipe, bootstrap_student

    cache = Path(os.environ.get("SETTLE_TEST_CACHE", Path(__file__).resolve().parents[1] / "var" / "cache"))
    return bootstrap_student(cache, BootstrapRecipe(shape="small", steps=200, phase3_steps=0), progress=False)
