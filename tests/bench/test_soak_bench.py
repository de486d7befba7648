"""bench/soak.py runs end to end for half a minute (the figures are not checked), and its RSS gate can fail."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from settle.streams.local.s3 import moto_server_binary

ROOT = Path(__file__).resolve().parents[2]


def _soak_module():  # bench/ is not a package
    spec = importlib.util.spec_from_file_location("soak_bench", ROOT / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak_bench"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.skipif(moto_server_binary() is None, reason="needs moto[server] for the broker's s3 storage")
def test_soak_bench_samples_and_plots(tmp_path: Path) -> None:
    plot, table = tmp_path / "soak.png", tmp_path / "soak.csv"
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--rate", "100", "--minutes", "0.5", "--interval-s", "3",
         "--warmup-s", "6", "--startup-s", "15", "--prestart-s", "60", "--max-slope-mb-per-min", "1e9",
         "--plot", str(plot), "--csv", str(table), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "COLUMNS": "250"},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = list(csv.DictReader(table.open()))
    assert len(rows) >= 5, out.stdout[-2000:]
    assert int(rows[-1]["produced"]) > 0 and float(rows[-1]["worker0_rss_mb"]) > 0
    assert float(rows[-1]["tansu_rss_mb"]) > 0 and float(rows[-1]["moto (s3)_rss_mb"]) > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "soak summary" in out.stdout and "PASS" in out.stdout
    assert "retention.ms" in out.stdout  # the broker's own view of the topic configs


def _sample(soak, t_s: float, worker_mb: float):
    return soak.Sample(t_s=t_s, produced=int(t_s * 10), head=int(t_s * 10), committed=int(t_s * 10), lag=0,
                       settled=0, settled_ids=0, regions_open=0.0, watermark_behind_s=0.0, late=0.0, dropped=0.0, behind_s=0.0, load1=1.0,
                       rss_mb={"worker0": worker_mb, "tansu": 20.0 + t_s}, cpu_pct={"worker0": 1.0, "tansu": 1.0})


@pytest.mark.parametrize(("growth_mb_per_min", "fails"), [(0.0, False), (1.0, False), (6.0, True)])
def test_the_rss_gate_fails_on_a_growing_worker_only(growth_mb_per_min: float, fails: bool) -> None:
    soak = _soak_module()
    samples = [_sample(soak, t, 70.0 + growth_mb_per_min * t / 60) for t in range(0, 600, 5)]
    producer = soak.Producer(settings=None, rate=10, t0_ms=0, seed=0, prestart_s=0, jitter_ms=0, ticks="live",
                             pool=None, spread_ms=100)
    run = soak.Run(samples, {}, {}, (0, 0), producer, [True], 600.0)
    args = argparse.Namespace(table_rows=10, interval_s=5.0, warmup_s=60.0, max_slope_mb_per_min=2.0, rate=10.0,
                              storage="memory", prefix="soak.", retention_ms=0)
    failures = soak.summarize(run, args, ["worker0", "tansu"], Console(width=200, file=io.StringIO()))
    # the broker grows 60 MB/min here, but only workers are checked
    assert bool(failures) is fails, failures
    if fails:
        assert "worker0" in failures[0] and "+6.00" in failures[0]
