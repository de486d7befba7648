"""`settle simulate --noise-rate`: labelled noise from the command line, labels beside the stream."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from settle.streams.cli import app
from settle.streams.simulate import NOISE_CLASSES, SimulationConfig, generate

runner = CliRunner()


def _simulate(tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["simulate", "--sessions", "6", "--seed", "5", *extra])
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_noise_rate_matches_the_config_and_writes_its_labels(tmp_path: Path) -> None:
    out, labels = tmp_path / "t.jsonl", tmp_path / "noise.json"
    code, _, err = _simulate(tmp_path, "--noise-rate", "0.2", "-o", str(out), "--noise-labels", str(labels))
    assert code == 0, err
    want = generate(SimulationConfig(sessions=6, seed=5, noise_rate=0.2))
    got = json.loads(labels.read_text())
    assert got == want.noise and got  # the same labels as the library's, and some noise at all
    assert set(got.values()) <= set(NOISE_CLASSES)
    lines = out.read_text().splitlines()
    assert len(lines) == len(want.events)
    request_ids = {json.loads(line).get("request_id") for line in lines}
    assert set(got) <= request_ids  # every label names a request of the written stream
    assert "noise_class" not in out.read_text()  # labels never on the wire


def test_no_noise_by_default_and_the_stream_differs_with_noise(tmp_path: Path) -> None:
    plain, noisy = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert _simulate(tmp_path, "-o", str(plain))[0] == 0
    assert _simulate(tmp_path, "-o", str(noisy), "--noise-rate", "0.2")[0] == 0
    assert len(plain.read_text().splitlines()) == len(generate(SimulationConfig(sessions=6, seed=5)).events)
    assert plain.read_text() != noisy.read_text()


def test_noise_rate_out_of_range_or_with_git_is_refused(tmp_path: Path) -> None:
    code, _, err = _simulate(tmp_path, "--noise-rate", "1.5")
    assert code == 2 and "less than or equal to 1" in err
    code, _, err = _simulate(tmp_path, "--noise-rate", "0.2", "--git", str(tmp_path))
    assert code == 2 and "--git" in err
