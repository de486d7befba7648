"""The trust campaign under hypothesis: generated worlds against the whole-buffer model.

bench/trust_campaign.py holds the world generator and the independent
whole-buffer model (it imports nothing of the tracker's logic); here hypothesis
draws every choice, so a failure shrinks to a small world. Invariants: no
emitted example disagrees with the whole buffer, and the settled records are
the same bytes on one partition, spread over 2-4, and on a replay.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from settle.streams.settling.tracker import TrackerConfig

_PATH = Path(__file__).resolve().parents[4] / "bench" / "trust_campaign.py"
_spec = importlib.util.spec_from_file_location("trust_campaign", _PATH)
campaign = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["trust_campaign"] = campaign
_spec.loader.exec_module(campaign)  # type: ignore[union-attr]


class Draws:
    """The generator's Rng protocol on hypothesis draws (so failures shrink)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def randint(self, a: int, b: int) -> int:
        return self.data.draw(st.integers(a, b))


def _check(data: st.DataObject, config: TrackerConfig, *, beyond: bool, record_time: bool) -> object:
    figures = campaign.Figures()
    campaign.check_world(Draws(data), config, figures, beyond=beyond, record_time=record_time, steps=40)
    assert figures.examples_of_wrong == [] and figures.wrong == 0
    assert figures.partition_mismatches == 0 and figures.undecided == 0
    return figures


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from(["absorb", "exclusive"]), st.booleans())
def test_within_bounds_every_emitted_example_is_the_whole_buffers(data: st.DataObject, boundary: str,
                                                                  record_time: bool) -> None:
    """Skewed and stepping clocks, late whole-session uploads, redeliveries, corrupt edits, stale snapshots."""
    figures = _check(data, TrackerConfig(boundary=boundary), beyond=False, record_time=record_time)  # type: ignore
    assert figures.drops["late events"] == 0  # type: ignore[attr-defined]


@settings(max_examples=40, deadline=None)
@given(st.data(), st.booleans())
def test_beyond_bounds_unconfirmed_drop_is_never_wrong(data: st.DataObject, record_time: bool) -> None:
    """Outages and clock steps past the lateness bound: with unconfirmed="drop", late means missing, not wrong.

    Stale snapshots here can land on text the tracker already decided (nothing
    left to compare with), so the generator sends them only over held text.
    """
    _check(data, TrackerConfig(unconfirmed="drop"), beyond=True, record_time=record_time)
