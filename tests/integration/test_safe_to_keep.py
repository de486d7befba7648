"""Safe to keep, through the real broker: planted secrets and an excluded file, worker and scorer.

One buffer per secret kind plants the secret in every text field of its request (region,
edit history, excerpt, related excerpt, diagnostics, production prediction); one buffer
edits an excluded file (``.env.local``). The settle worker and a scorer (tiny student,
solve-rate band [0, 1], so every example is kept) run; no topic may hold a secret, and the excluded
file never reaches `settled`. The secrets are fake values in real shapes, assembled at run
time so this file holds no secret-shaped string.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from settle.schemas.codecs import decode, decode_settled, encode
from settle.schemas.events import (
    BufferEdited,
    Diagnostic,
    EditStep,
    Excerpt,
    PredictionRequested,
    PromptContext,
    Replacement,
    Span,
    Tick,
)
from settle.schemas.scored import ScoredExample
from settle.streams.kafka.io import produce_lines, read_topic
from settle.streams.kafka.topics import ensure_topics_sync
from settle.streams.local.processes import WorkerProcess
from settle.streams.settings import KEPT, SCORED, SETTLED, Settings
from settle.streams.settling.reference import settle_records
from tests.support.secrets import PLANTED

pytestmark = [pytest.mark.broker, pytest.mark.slow]

EXCLUDED = "app/.env.local"


def _pieces(secret: str) -> list[bytes]:
    """What must not appear anywhere: the secret, or each line of a key block's body."""
    return [p.encode() for p in secret.split("\n") if len(p) >= 8 and "PRIVATE KEY" not in p]


def _buffer(i: int, session: str, path: str, line: str) -> list[bytes]:
    head = "import os\n\n"
    region = f"{line}\nvalue = {i}\n"
    start = len(head.encode())
    req = PredictionRequested(
        time_ms=1_000 + i, session_id=session, path=path, consent=True, encoding="utf-8", request_id=f"r{i}",
        region=Span(start=start, end=start + len(region.encode())), region_text=region, cursor=start,
        context=PromptContext(
            edit_history=[EditStep(path=path, old_text="", new_text=line + "\n")],
            excerpt=Excerpt(path=path, text=head + region + "\nprint(value)\n"),
            related=[Excerpt(path="src/other.py", text=f"# see also\n{line}\n")],
            diagnostics=[Diagnostic(message=f"unused: {line}", severity="warning")],
        ),
        production_prediction=region.replace(f"= {i}", f"= {i} + 1"),
    )
    at = start + len(region.encode()) - 1  # before the region's last newline
    edit = BufferEdited(time_ms=2_000 + i, session_id=session, path=path, consent=True, encoding="utf-8",
                        replacements=[Replacement(start=at, end=at, text=" * 2")])
    return [encode(req), encode(edit)]


def test_no_secret_reaches_settled_scored_or_kept_and_no_excluded_file_settles(
    settings: Settings, tmp_path: Path, student_dir: Path
) -> None:
    lines: list[bytes] = []
    for i, (kind, (secret, line)) in enumerate(sorted(PLANTED.items())):
        lines += _buffer(i, f"s-{kind}", f"src/{kind}.py", line.format(secret))
    lines += _buffer(99, "s-excluded", EXCLUDED, "DEBUG = True")
    lines.append(encode(Tick(time_ms=120_000)))
    reference = settle_records(enumerate(lines), settings.tracker, safety=settings.safety)
    assert len(reference.examples) == len(PLANTED) and reference.safety.dropped["excluded_path"] == 1
    ensure_topics_sync(settings)
    asyncio.run(produce_lines(settings, lines))

    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    scorer = WorkerProcess(
        settings, tmp_path / "scorer.log", command="scorer",
        extra_args=("--model", str(student_dir), "--k", "2", "--max-new-tokens", "4",
                    "--keep-min", "0", "--keep-max", "1"),
    ).start()
    want = {e.id for e in reference.examples}
    try:
        deadline = time.monotonic() + 90
        while True:
            assert worker.alive, worker.log_tail()
            assert scorer.alive, scorer.log_tail()
            kept = asyncio.run(read_topic(settings, KEPT, idle_s=1.0))
            if {decode(r.value, ScoredExample).id for r in kept} >= want:
                break
            if time.monotonic() > deadline:
                scored = [decode(r.value, ScoredExample) for r in asyncio.run(read_topic(settings, SCORED, idle_s=1.0))]
                settled_now = asyncio.run(read_topic(settings, SETTLED, idle_s=1.0))
                pytest.fail(f"settled {len(settled_now)}, scored {[(s.decision.decision, s.decision.reason) for s in scored]}"
                            f"\n{worker.log_tail()}\n{scorer.log_tail()}")
            time.sleep(1.0)
        topics = {name: asyncio.run(read_topic(settings, name, idle_s=1.0)) for name in (SETTLED, SCORED, KEPT)}
    finally:
        worker.stop()
        scorer.stop()

    settled = [decode_settled(r.value) for r in topics[SETTLED]]
    assert {e.id for e in settled} == want
    assert EXCLUDED not in {e.path for e in settled}
    assert {e.id: e for e in settled} == {e.id: e for e in reference.examples}
    for name, records in topics.items():
        assert records, f"{name} is empty"
        for r in records:
            for kind, (secret, _) in PLANTED.items():
                for piece in _pieces(secret):
                    assert piece not in r.value, f"{kind} leaked into {name}"
            assert EXCLUDED.encode() not in r.value
    by_path = {e.path: e for e in settled}
    for kind in PLANTED:
        example = by_path[f"src/{kind}.py"]
        assert f"<secret:{kind}>" in example.original_text and f"<secret:{kind}>" in example.settled_text
