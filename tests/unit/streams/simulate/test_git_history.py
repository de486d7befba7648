"""`settle simulate --git`: sessions from real history, checked against whole-buffer replay by the simulator."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from settle.schemas.events import BufferEdited, Replacement
from settle.streams.cli import app
from settle.streams.simulate.git_history import GitSimConfig, generate, self_check

ROOT = Path(__file__).resolve().parents[4]  # settle's own repository


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   check=True, capture_output=True)


@pytest.fixture
def small_repo(tmp_path: Path) -> Path:
    """Three commits: a file created, then edited twice (non-ASCII text included), plus a binary file."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    f = repo / "app.py"
    f.write_text("def greet(name):\n    return 'hi ' + name\n\n\ndef add(a, b):\n    return a + b\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    f.write_text("def greet(name: str) -> str:\n    return f'héllo {name} ✓'\n\n\n"
                 "def add(a, b):\n    total = a + b\n    return total\n\n\ndef sub(a, b):\n    return a - b\n")
    (repo / "blob.bin").write_bytes(b"\0\1\2")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "two")
    f.write_text(f.read_text().replace("total", "s"))
    _git(repo, "commit", "-q", "-am", "three")
    return repo


def test_small_history_self_checks_and_is_deterministic(small_repo: Path) -> None:
    config = GitSimConfig(repo=small_repo, think_rate=0.3, elsewhere_rate=1.0)
    sim = generate(config)
    report = self_check(sim, config.tracker)
    assert report.ok, report.mismatches
    assert report.commits == 2 and report.files == 2 and report.regions >= 3  # the binary file is skipped
    assert report.matched == report.expected.get("settled", 0) > 0
    assert any(isinstance(e, BufferEdited) and e.origin == "agent" for e in sim.events), "an edit elsewhere"
    assert generate(config).events == sim.events


def test_self_check_catches_a_wrong_edit(small_repo: Path) -> None:
    config = GitSimConfig(repo=small_repo)
    sim = generate(config)
    events = [msgspec.structs.replace(e, replacements=[Replacement(start=r.start, end=r.end, text=r.text + "#")
                                       for r in e.replacements])
              if isinstance(e, BufferEdited) and e.origin == "typed" else e for e in sim.events]
    report = self_check(replace(sim, events=events), config.tracker)
    assert report.mismatched > 0 and not report.ok


def test_settles_own_history(tmp_path: Path) -> None:
    """settle's own repository is always at hand: its recent history must self-check."""
    config = GitSimConfig(repo=ROOT, max_commits=12)
    report = self_check(generate(config), config.tracker)
    assert report.commits > 0 and report.regions > 0
    assert report.ok, report.mismatches[:5]


def test_cli(small_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    result = CliRunner().invoke(app, ["simulate", "--git", str(small_repo), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "self-check: OK" in result.stderr and out.read_text().count("\n") > 10
    result = CliRunner().invoke(app, ["simulate", "--git", str(small_repo), "--rev", "nope", "-o", str(out)])
    assert result.exit_code == 2 and "unknown revision" in result.stderr
