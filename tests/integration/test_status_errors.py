"""`settle status` when the broker is gone or the topics are not there: said on the page, never an empty page.

A broker of its own (the shared one must not be stopped), the real `settle status` process, its page
read over HTTP.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from pathlib import Path

import pytest

from settle.schemas.codecs import encode
from settle.schemas.scored import BandPolicy, Decision, ScoredExample
from settle.streams.kafka.io import produce_lines
from settle.streams.kafka.topics import ensure_topics_sync
from settle.streams.local.broker import EmbeddedBroker, free_port
from settle.streams.local.processes import WorkerProcess
from settle.streams.settings import SCORED, Settings
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate

pytestmark = [pytest.mark.broker]


def _page(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20) as r:
        return r.read().decode()


def _until(port: int, status: WorkerProcess, ok, timeout_s: float = 60) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        assert status.alive, status.log_tail()
        try:
            html = _page(port)
            if ok(html):
                return html
        except OSError:
            pass
        assert time.monotonic() < deadline, status.log_tail()
        time.sleep(0.5)


def _scored_total(html: str) -> int:
    return int(re.search(r'id="scored-total"><b>(\d+)<', html).group(1))  # type: ignore[union-attr]


def test_a_dead_broker_and_missing_topics_are_said_on_the_page(tmp_path: Path) -> None:
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=1, seed=3))]
    example = settle_records(enumerate(lines)).examples[0]
    decision = Decision(decision="keep", reason="test", samples_used=2, policy=BandPolicy())
    scored = ScoredExample(id=example.id, example=example, decision=decision, model_name="student", model_version="v1")
    with EmbeddedBroker(port=free_port(), log_path=tmp_path / "broker.log") as broker:
        settings = Settings(bootstrap=broker.bootstrap, topic_prefix="st.", data_dir=tmp_path / "w")
        port = free_port()
        status = WorkerProcess(settings, tmp_path / "status.log", command="status",
                               extra_args=("--port", str(port))).start()
        try:
            # no topics yet: said, and followed once they exist
            html = _until(port, status, lambda h: "does not exist" in h)
            assert "st.scored" in html and 'id="broker-errors"' in html
            ensure_topics_sync(settings)
            asyncio.run(produce_lines(settings, [encode(scored), b"{junk"], topic=SCORED))
            html = _until(port, status, lambda h: _scored_total(h) == 1 and "did not decode" in h)
            assert "1 record(s) on st.scored did not decode (malformed)" in html
            assert "does not exist" not in html
            broker.stop()
            html = _until(port, status, lambda h: "cannot reach the Kafka broker" in h)
            assert f"cannot reach the Kafka broker at {settings.bootstrap}" in html
            assert _scored_total(html) == 1  # what was read stays, marked as possibly stale
        finally:
            status.stop()
