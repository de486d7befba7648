"""The status page in a real headless Chromium, against a running settle worker and real topics.

Checks that the plots and tables are there with the right numbers (read back from the DOM
Chromium built), and keeps a screenshot (var/screenshots/status.png; docs/status.png is one).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from settle.schemas.codecs import decode, encode
from settle.schemas.models import ModelPublished
from settle.schemas.scored import BandPolicy, ScoredExample
from settle.streams.contracts.sampling import SamplingConfig
from settle.streams.kafka.io import produce_lines
from settle.streams.kafka.topics import ensure_topics_sync
from settle.streams.local.broker import free_port
from settle.streams.local.processes import WorkerProcess
from settle.streams.settings import MODELS, SCORED, Settings
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate
from settle.streams.status.render import statistic

from .test_retraining_job import _scrape, _sample

pytestmark = [pytest.mark.broker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _browser(*args: str, timeout: float = 60) -> str:
    cmd = [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--virtual-time-budget=3000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium package (.ci/run installs it)")
def test_status_page_in_headless_chromium(settings: Settings, tmp_path: Path, bootstrapped_student: Path) -> None:
    import re

    from settle.streams.runtime.student import OnnxStudent
    from settle.streams.scoring.score import ScoringConfig, score_batch

    ensure_topics_sync(settings)
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=8, seed=51))]
    examples = settle_records(enumerate(lines), settings.tracker).examples
    # a band around this student's own difficulty, so the page shows all three sides of it
    policy = BandPolicy(mode="median", k=4, keep_min_median=1.45, keep_max_median=1.8)
    scored = score_batch(examples, OnnxStudent(bootstrapped_student),
                         ScoringConfig(policy=policy, sampling=SamplingConfig(max_new_tokens=48)))
    asyncio.run(produce_lines(settings, [encode(s) for s in scored], topic=SCORED))
    scored = [decode(encode(s), ScoredExample) for s in scored]  # as the page reads them (an inf median is null)
    verdicts = [
        ModelPublished(name="student", version="v0001", status="published", location="/m/v0001",
                       created_at_ms=1_795_000_000_000, reason="bootstrap student"),
        ModelPublished(name="student", version="v0002", status="rejected", location="/m/v0002",
                       created_at_ms=1_795_000_600_000, parent_version="v0001",
                       reason="delta-chrF 2.95 below 4.20 - 1.00", metrics={"delta_chrf": 2.95, "count": 5.0},
                       parent_metrics={"delta_chrf": 4.2, "count": 5.0}),
    ]
    asyncio.run(produce_lines(settings, [encode(m) for m in verdicts], topic=MODELS))

    metrics_port, page_port = free_port(), free_port()
    worker = WorkerProcess(settings, tmp_path / "worker.log", extra_args=("--metrics-port", str(metrics_port))).start()
    status = WorkerProcess(settings, tmp_path / "status.log", command="status",
                           extra_args=("--port", str(page_port), "--metrics",
                                       f"http://127.0.0.1:{metrics_port}/metrics")).start()
    try:
        # no ticks: the last regions of each buffer stay open
        more = [line for e in simulate(SimulationConfig(sessions=3, seed=52)) if b'"kind":"tick"' not in (line := encode(e))]
        deadline = time.monotonic() + 90
        while True:  # the worker is running and its lag probe has reported every partition
            try:
                text = _scrape(metrics_port)
                if all(_sample(text, "settle_consumer_lag_records", partition=str(p)) is not None
                       for p in range(settings.partitions)):
                    break
            except OSError:
                pass
            assert worker.alive and time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.5)
        asyncio.run(produce_lines(settings, more))
        url = f"http://127.0.0.1:{page_port}/"
        while True:  # the page has read every scored example
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if f'id="scored-total"><b>{len(scored)}<' in r.read().decode():
                        break
            except OSError:
                pass
            assert status.alive and time.monotonic() < deadline, status.log_tail()
            time.sleep(0.5)
        time.sleep(6)  # the worker has settled some of the new telemetry and probed the lag again
        worker_metrics = _scrape(metrics_port)
        dom = _browser("--dump-dom", url)
        (tmp_path / "dom.html").write_text(dom)
        shot = tmp_path / "status.png"
        _browser(f"--screenshot={shot}", "--window-size=1280,1900", "--force-device-scale-factor=0.7", url)
    finally:
        status.stop()
        worker.stop()

    # band histogram: every example with a statistic, by decision, and the policy's thresholds
    with_stat = [s for s in scored if statistic(s) is not None]
    assert f'data-count="{len(with_stat)}"' in dom and 'data-mode="median"' in dom
    bars = Counter()
    for decision, n in re.findall(r'<rect class="bar" data-decision="(\w+)" data-count="(\d+)"', dom):
        bars[decision] += int(n)
    assert bars == Counter(s.decision.decision for s in with_stat)
    assert re.findall(r'class="threshold" data-name="(\w+)" data-value="([\d.]+)"', dom) == [
        ("keep_min", "1.45"), ("keep_max", "1.8")]
    # recent decisions: the 8 most recent, newest first, each with the user's diff and samples
    rows = re.findall(r'<tr class="decision" data-id="([^"]+)" data-decision="(\w+)"', dom)
    by_time = sorted(scored, key=lambda s: (s.example.settled_at_ms, s.id))
    assert rows == [(s.id, s.decision.decision) for s in by_time[-8:][::-1]]
    assert dom.count("<ins>") + dom.count("<del>") > 0
    # partitions: open regions and lag as the worker's metrics say
    opened = dict(re.findall(r'<tr class="open-regions" data-partition="(\d+)" data-value="([\d.]+)"', dom))
    assert set(opened) == {str(p) for p in range(settings.partitions)}
    assert sum(float(v) for v in opened.values()) == _sample_total(worker_metrics, "settle_regions_open") > 0
    lags = re.findall(r'<tr class="lag" data-group="([^"]+)" data-partition="(\d+)"', dom)
    assert sorted(p for _, p in lags) == [str(p) for p in range(settings.partitions)]
    # models and the gate's verdicts, with the reason
    assert re.findall(r'<tr class="model" data-version="(v\d+)" data-status="(\w+)"', dom) == [
        ("v0002", "rejected"), ("v0001", "published")]
    assert "delta-chrF 2.95 below 4.20 - 1.00" in dom
    assert 'id="model-live"><b>student v0001<' in dom
    # production kept rate over time, one line per production model
    with_rate = {s.example.production_model for s in scored if s.example.production_kept_rate is not None}
    assert set(re.findall(r'<polyline class="kept-rate" data-model="([^"]+)"', dom)) == with_rate
    assert with_rate, "the simulated sessions carry production predictions"
    # the screenshot a person would look at
    assert shot.stat().st_size > 20_000
    keep = ROOT / "var" / "screenshots"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "status.png")


def _sample_total(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))
