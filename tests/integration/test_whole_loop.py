"""The whole loop on the real broker: settle -> score -> kept -> train -> publish -> hot reload."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from settle.schemas.codecs import decode, decode_event, encode
from settle.schemas.examples import DeadLetter
from settle.schemas.scored import ScoredExample
from settle.streams.kafka.io import produce_lines, read_topic
from settle.streams.kafka.topics import ensure_topics_sync
from settle.streams.local.processes import WorkerProcess
from settle.streams.settings import DEAD_LETTER, KEPT, SCORED, Settings
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, continue_after, simulate
from settle.trainer.evaluate.gate import GateTolerance
from settle.trainer.finetune.config import FinetuneConfig
from settle.trainer.job import TrainConfig, publish_bootstrap, train_once

pytestmark = [pytest.mark.broker, pytest.mark.slow]

#: wide enough that a tiny, briefly trained student keeps something; the band
#: arithmetic itself is tested exactly in test_band.py
SCORER_ARGS = ("--k", "8", "--mode", "median", "--keep-min", "0.0", "--keep-max", "3.0", "--max-new-tokens", "96")


def _telemetry(seed: int, sessions: int, after: list[bytes] | None = None) -> list[bytes]:
    config = SimulationConfig(sessions=sessions, seed=seed)
    if after:  # appended telemetry moves on in event time, or all of it would be late
        config = replace(config, start_ms=continue_after([decode_event(line) for line in after]))
    return [encode(e) for e in simulate(config)]


def _scored(settings: Settings, topic: str = SCORED) -> list[ScoredExample]:
    return [decode(r.value, ScoredExample) for r in asyncio.run(read_topic(settings, topic, idle_s=1.5))]


def _wait_scored(settings: Settings, ids: set[str], worker: WorkerProcess, timeout_s: float = 240) -> list[ScoredExample]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert worker.alive, worker.log_tail()
        scored = _scored(settings)
        if ids <= {s.id for s in scored}:
            return scored
        time.sleep(1.0)
    pytest.fail(f"only {len(ids & {s.id for s in _scored(settings)})}/{len(ids)} scored:\n{worker.log_tail()}")


def test_whole_loop_publishes_a_second_model_and_the_scorer_switches(
    settings: Settings, tmp_path: Path, bootstrapped_student: Path
) -> None:
    ensure_topics_sync(settings)
    config = TrainConfig(
        registry=tmp_path / "models",
        min_examples=4,
        eval_fraction=0.3,
        max_new_tokens=96,
        finetune=FinetuneConfig(steps=20, batch_size=4, warmup_steps=2, lr=1e-3),
        # the gate is tested in tests/unit/trainer/evaluate/test_gate.py; here any candidate may go live
        tolerance=GateTolerance(delta_chrf=100.0, parse_rate=1.0, reversal_ratio=1.0, exact_match_rate=1.0),
        idle_s=2.0,
    )
    first = publish_bootstrap(settings, config, bootstrapped_student)
    assert first.version == "v0001"

    settle = WorkerProcess(settings, tmp_path / "settle.log").start()
    scorer = WorkerProcess(
        settings, tmp_path / "scorer.log", command="scorer",
        extra_args=("--model", str(bootstrapped_student), *SCORER_ARGS),
    ).start()
    try:
        batch1 = _telemetry(seed=21, sessions=6)
        ids1 = {e.id for e in settle_records(enumerate(batch1), settings.tracker).examples}
        asyncio.run(produce_lines(settings, batch1))
        scored = _wait_scored(settings, ids1, scorer)
        kept = _scored(settings, KEPT)
        decisions = Counter(s.decision.decision for s in scored)
        assert kept, f"nothing kept: {decisions}"
        assert {s.id for s in kept} < {s.id for s in scored}, decisions  # a strict subset
        assert all(s.decision.decision == "keep" for s in kept)
        assert {s.model_version for s in scored} == {"v0001"}

        asyncio.run(produce_lines(settings, [b"{garbage on kept"], topic=KEPT))
        report = train_once(settings, config, progress=False)
        assert report.status == "published", report.reason
        dead = [decode(r.value, DeadLetter) for r in asyncio.run(read_topic(settings, DEAD_LETTER, idle_s=1.0))]
        assert [(d.agent, d.reason) for d in dead] == [("train", "malformed")]
        assert report.message is not None and report.message.version == "v0002"
        assert report.message.parent_version == "v0001"
        version_dir = Path(report.message.location)
        for name in ("model.onnx", "tokenizer.json", "hf", "model.json", "manifest.json"):
            assert (version_dir / name).exists(), name
        assert report.message.data_offsets and report.message.metrics["count"] > 0

        deadline = time.monotonic() + 60
        while "now uses student v0002" not in scorer.log_tail(200):
            assert time.monotonic() < deadline, scorer.log_tail()
            time.sleep(0.5)

        batch2 = _telemetry(seed=22, sessions=4, after=batch1)
        reference = {e.id: e for e in settle_records(enumerate(batch1 + batch2), settings.tracker).examples}
        ids2 = set(reference) - ids1
        asyncio.run(produce_lines(settings, batch2))
        scored = _wait_scored(settings, ids1 | ids2, scorer)
    finally:
        scorer.stop()
        settle.stop()
    later = [s for s in scored if s.id in ids2]
    assert {s.model_version for s in later} == {"v0002"}
    assert all(s.example == reference[s.id] for s in later)  # the same settling as offline
    assert any(s.decision.samples_used for s in later), "the new model sampled nothing"
    per_id = Counter(s.id for s in scored)
    assert max(per_id.values()) == 1, "an example was scored twice"

    # the next run starts after the committed offsets: only the new kept examples
    again = train_once(settings, config, progress=False)
    assert again.new_examples <= len(ids2)


def test_a_candidate_that_fails_the_gate_is_recorded_not_published(
    settings: Settings, tmp_path: Path, bootstrapped_student: Path
) -> None:
    from settle.schemas.scored import BandPolicy
    from settle.streams.contracts.sampling import SamplingConfig
    from settle.streams.runtime.student import OnnxStudent
    from settle.streams.scoring.score import ScoringConfig, score_batch
    from settle.trainer.publish.registry import history, latest_published

    ensure_topics_sync(settings)
    config = TrainConfig(
        registry=tmp_path / "models", min_examples=4, eval_fraction=0.5, max_new_tokens=48,
        finetune=FinetuneConfig(steps=4, batch_size=4, warmup_steps=1),
        # demands 1000 chrF points of improvement: no candidate can pass
        tolerance=GateTolerance(delta_chrf=-1000.0), idle_s=1.0,
    )
    publish_bootstrap(settings, config, bootstrapped_student)
    examples = settle_records(enumerate(_telemetry(seed=31, sessions=10)), settings.tracker).examples
    wide = ScoringConfig(policy=BandPolicy(mode="median", k=2, keep_min_median=0.0, keep_max_median=1e6),
                         sampling=SamplingConfig(max_new_tokens=48))
    kept = [s for s in score_batch(examples, OnnxStudent(bootstrapped_student), wide) if s.decision.decision == "keep"]
    assert len(kept) >= 4
    asyncio.run(produce_lines(settings, [encode(s) for s in kept], topic=KEPT))

    report = train_once(settings, config, progress=False)
    assert report.status == "rejected" and "delta-chrF" in report.reason, report.reason
    assert report.message is not None and report.message.status == "rejected"
    messages = asyncio.run(history(settings))
    assert [m.status for m in messages] == ["published", "rejected"]
    assert latest_published(messages).version == "v0001"  # type: ignore[union-attr]
    assert (Path(report.message.location) / "model.json").exists()  # kept for inspection, not served
