"""The retraining job as an operator runs it, every step through the `settle` command line.

Empty registry -> `settle publish --model DIR` -> a scorer following `models` with metrics on
-> `settle train --every` (two runs on the schedule's grid) -> the verdict, with its reason,
in the scorer's log and metrics. And a run killed mid-fine-tune resumes from its checkpoint.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from msgspec.structs import replace

from settle.schemas.codecs import encode
from settle.schemas.scored import BandPolicy
from settle.streams.contracts.sampling import SamplingConfig
from settle.streams.kafka.io import committed_offsets, produce_lines
from settle.streams.kafka.topics import ensure_topics_sync
from settle.streams.local.broker import free_port
from settle.streams.local.processes import WorkerProcess, settings_env
from settle.streams.settings import KEPT, Settings
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "settle.streams.cli", *args]


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}


def _cli(settings: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cli_cmd(*args), env=_env(settings), capture_output=True, text=True, timeout=timeout)


def _kept(settings: Settings, student: Path, seed: int, sessions: int = 8) -> int:
    """Put scored `keep` examples on `kept`."""
    from settle.streams.runtime.student import OnnxStudent
    from settle.streams.scoring.score import ScoringConfig, score_batch

    lines = [encode(e) for e in simulate(SimulationConfig(sessions=sessions, seed=seed))]
    examples = settle_records(enumerate(lines), settings.tracker).examples
    wide = ScoringConfig(policy=BandPolicy(mode="median", k=2, keep_min_median=0.0, keep_max_median=1e6),
                         sampling=SamplingConfig(max_new_tokens=16))
    scored = [s for s in score_batch(examples, OnnxStudent(student), wide) if s.decision.decision != "unchanged"]
    # a random-weight student never parses its output (distance inf): these examples are kept
    # by decree, the trainer only needs `keep` records (the band is tested in test_band.py)
    kept = [replace(s, decision=replace(s.decision, decision="keep")) for s in scored]
    asyncio.run(produce_lines(settings, [encode(s) for s in kept], topic=KEPT))
    return len(kept)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the exposition text whose labels include ``labels``."""
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(2))
    return None


def test_first_model_from_the_cli_two_scheduled_runs_and_the_verdict_in_the_scorer(
    settings: Settings, tmp_path: Path, student_dir: Path
) -> None:
    registry = tmp_path / "models"
    ensure_topics_sync(settings)

    # an empty registry and an empty `models`: the operator publishes the first model
    published = _cli(settings, "publish", "--model", str(student_dir), "--registry", str(registry))
    assert published.returncode == 0, published.stderr
    first = Path(published.stdout.strip())
    assert first == (registry / "student" / "v0001").resolve() and (first / "model.onnx").exists()
    assert "published student v0001" in published.stderr
    refused = _cli(settings, "publish", "--model", str(tmp_path), "--registry", str(registry))
    assert refused.returncode == 2 and "not an exported student" in refused.stderr

    port = free_port()
    scorer = WorkerProcess(settings, tmp_path / "scorer.log", command="scorer",
                           extra_args=("--model", str(student_dir), "--metrics-port", str(port))).start()
    try:
        deadline = time.monotonic() + 60
        while True:  # the scorer caught up with `models`: it serves v0001 (the published copy)
            try:
                text = _scrape(port)
                if _sample(text, "settle_model_verdicts_total", model="student", verdict="published") == 1:
                    break
            except OSError:
                pass
            assert scorer.alive and time.monotonic() < deadline, scorer.log_tail()
            time.sleep(0.5)

        assert _kept(settings, student_dir, seed=41) >= 4
        every, train_port = 8.0, free_port()
        train_log = tmp_path / "train.log"
        trainer = subprocess.Popen(
            _cli_cmd("train", "--registry", str(registry), "--every", f"{every:g}s", "--runs", "2", "--steps", "4",
                     "--checkpoint-every", "2", "--min-examples", "4", "--metrics-port", str(train_port)),
            env=_env(settings), stdout=subprocess.DEVNULL, stderr=open(train_log, "wb"))
        try:
            deadline = time.monotonic() + 240
            while "next run at" not in train_log.read_text():  # between the two runs: the trainer's metrics
                assert trainer.poll() is None and time.monotonic() < deadline, train_log.read_text()
                time.sleep(0.2)
            trainer_metrics = _scrape(train_port)
            assert trainer.wait(240) == 0, train_log.read_text()
        finally:
            if trainer.poll() is None:
                trainer.kill()
        train = subprocess.CompletedProcess(trainer.args, 0, "", train_log.read_text())
        starts = [(float(a), float(b)) for a, b in re.findall(r"run \d starts at ([\d.]+) \(slot ([\d.]+)\)", train.stderr)]
        assert len(starts) == 2, train.stderr
        (start1, slot1), (start2, slot2) = starts
        # the second run is on the grid of the first one's start, whatever the first run took
        k = round((slot2 - slot1) / every)
        assert k >= 1 and abs(slot2 - slot1 - k * every) < 1e-3, starts
        assert slot2 - 1.0 < start2 < slot2 + 2.0, starts
        verdicts = re.findall(r"train: (published|rejected|skipped)( v\d+)?[^:]*: (.*)", train.stderr)
        assert [v[0] for v in verdicts][1] == "skipped", train.stderr  # nothing new for the second run
        verdict, version, reason = verdicts[0][0], verdicts[0][1].strip(), verdicts[0][2]
        assert verdict in ("published", "rejected") and version == "v0002" and reason, train.stderr
        assert not (registry / "student" / ".train-run").exists()
        assert _sample(trainer_metrics, "settle_train_runs_total", status=verdict) == 1
        assert _sample(trainer_metrics, "settle_publish_gate_total", model="student", verdict=verdict) == 1
        assert _sample(trainer_metrics, "settle_train_last_run_examples", set="new") >= 4
        assert _sample(trainer_metrics, "settle_train_last_run_duration_seconds") > 0

        # the scorer saw the verdict: in its metrics, with the reason, and in its log
        deadline = time.monotonic() + 30
        while _sample(_scrape(port), "settle_model_verdicts_total", model="student", verdict=verdict) != (
            2 if verdict == "published" else 1
        ):
            assert time.monotonic() < deadline, _scrape(port)
            time.sleep(0.5)
        text = _scrape(port)
        last = _sample(text, "settle_model_last_verdict_info", model="student", version="v0002",
                       parent_version="v0001", verdict=verdict, reason=reason.replace('"', '\\"')[:300])
        assert last is not None and last > 0, [ln for ln in text.splitlines() if "verdict" in ln]
        if verdict == "published":
            assert _sample(text, "settle_model_info", model="student", version="v0002") == 1
            assert "scorer now uses student v0002" in scorer.log_tail(200)
        else:
            assert _sample(text, "settle_model_info", model="student", version="v0001") == 1
            assert f"candidate v0002 rejected: {reason}" in scorer.log_tail(200)
    finally:
        scorer.stop()


def test_a_killed_run_resumes_from_its_checkpoint_and_leaves_nothing_behind(
    settings: Settings, tmp_path: Path, student_dir: Path
) -> None:
    registry = tmp_path / "models"
    ensure_topics_sync(settings)
    assert _cli(settings, "publish", "--model", str(student_dir), "--registry", str(registry)).returncode == 0
    first_batch = _kept(settings, student_dir, seed=43)
    assert first_batch >= 4
    work = registry / "student" / ".train-run"
    checkpoints = work / "finetune" / "checkpoints"
    log = open(tmp_path / "train1.log", "wb")
    run = subprocess.Popen(_cli_cmd("train", "--registry", str(registry), "--steps", "10", "--checkpoint-every", "2",
                                    "--min-examples", "4"),
                           env=_env(settings), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not any(checkpoints.glob("step-*")) if checkpoints.exists() else True:
            assert run.poll() is None, (tmp_path / "train1.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "train1.log").read_text()
            time.sleep(0.1)
        run.send_signal(signal.SIGKILL)  # mid fine-tune, as a preempted node would
        run.wait()
    finally:
        if run.poll() is None:
            run.kill()
    saved = max(int(p.name.split("-")[1]) for p in checkpoints.glob("step-*"))
    assert saved >= 2 and (work / "run.json").exists()
    assert not asyncio.run(committed_offsets(settings, f"{settings.group_prefix}-trainer", KEPT))

    # more kept examples arrive meanwhile: they are not part of the resumed batch
    _kept(settings, student_dir, seed=44, sessions=3)
    again = _cli(settings, "train", "--registry", str(registry), "--steps", "10", "--checkpoint-every", "2",
                 "--min-examples", "4", timeout=300)
    assert again.returncode == 0, again.stderr
    m = re.search(r"train: (published|rejected) v0002 \(resumed from step (\d+)\)", again.stderr)
    assert m and int(m.group(2)) >= saved, again.stderr
    assert not work.exists()
    assert sorted(p.name for p in (registry / "student").iterdir() if p.is_dir()) == ["v0001", "v0002"]
    # the resumed run committed exactly the killed run's batch: what arrived later is left for the next run
    committed = asyncio.run(committed_offsets(settings, f"{settings.group_prefix}-trainer", KEPT))
    assert sum(committed.values()) == first_batch
