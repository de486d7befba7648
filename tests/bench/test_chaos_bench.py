"""bench/chaos.py: a tiny crash campaign meets its targets, and its comparison does catch defects."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from settle.schemas.codecs import encode
from settle.streams.settings import SETTLED
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate

ROOT = Path(__file__).resolve().parents[2]


def _chaos():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("chaos_bench", ROOT / "bench" / "chaos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_compare_counts_lost_invented_different_and_duplicates() -> None:
    chaos = _chaos()
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=3, seed=1))]
    examples = settle_records(enumerate(lines)).examples
    assert len(examples) >= 4
    reference = {e.id: encode(e) for e in examples[1:]}  # examples[0] is "invented" below
    changed = encode(msgspec.structs.replace(examples[2], settled_text=examples[2].settled_text + "!"))
    values = [encode(e) for e in examples[:-1]] + [encode(examples[1]), changed]  # last one lost
    fig = chaos.compare(SETTLED, values, reference)
    assert fig.lost == [examples[-1].id] and fig.invented == [examples[0].id]
    assert fig.different == [examples[2].id]
    assert (fig.records, fig.unique, fig.duplicates) == (len(examples) + 1, len(examples) - 1, 2)


@pytest.mark.broker
@pytest.mark.slow
def test_a_tiny_campaign_loses_invents_and_changes_nothing(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--events", "3000", "--kills", "3", "--rate", "300",
         "--seed", "1", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "COLUMNS": "250"},
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(r"kills: 3 \(", out.stdout), out.stdout
    rows = {m[0]: m[1:] for m in re.findall(r"│ (settled|scored|kept)\s*│([^\n]*)", out.stdout)}
    assert set(rows) == {"settled", "scored", "kept"}, out.stdout
    for topic, (cells,) in rows.items():
        expected, records, unique, dups, lost, invented, different = (
            int(c.strip().replace(",", "")) for c in cells.split("│") if c.strip())
        assert expected > 0 and unique == expected and records - unique == dups >= 0, (topic, cells)
        assert (lost, invented, different) == (0, 0, 0), (topic, cells)
    assert "targets (0 lost, 0 invented, 0 different content): met" in out.stdout
