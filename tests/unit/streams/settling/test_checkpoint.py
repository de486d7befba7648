"""Checkpoint and restore: a settler restored mid-stream gives the outputs of one that never stopped.

The worlds come from bench/trust_campaign.py (skewed clocks, late uploads,
redeliveries, corrupt edits, stale snapshots) and from the session simulator;
hypothesis picks the cut points. Equality is on the produced bytes, in order,
and on the final state.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settle.schemas.codecs import encode
from settle.streams.settling import checkpoint
from settle.streams.settling.checkpoint import CheckpointError
from settle.streams.settling.partition import PartitionSettler
from settle.streams.settling.safety import SafetyPolicy
from settle.streams.settling.tracker import TrackerConfig
from settle.streams.simulate import SimulationConfig, simulate

_PATH = Path(__file__).resolve().parents[4] / "bench" / "trust_campaign.py"
_spec = importlib.util.spec_from_file_location("trust_campaign_ckpt", _PATH)
campaign = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["trust_campaign_ckpt"] = campaign
_spec.loader.exec_module(campaign)  # type: ignore[union-attr]

Record = tuple[int, bytes | None, bytes, int | None]


class Draws:
    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def randint(self, a: int, b: int) -> int:
        return self.data.draw(st.integers(a, b))


def _settler(config: TrackerConfig, policy: SafetyPolicy, record_time: bool) -> PartitionSettler:
    return PartitionSettler(0, config, record_time=record_time, safety_policy=policy)


def _run(records: list[Record], config: TrackerConfig, policy: SafetyPolicy, record_time: bool,
         cuts: set[int]) -> tuple[list[tuple[str, bytes | None, bytes]], bytes]:
    """Outputs in order, restoring a fresh settler from a checkpoint before each index in ``cuts``."""
    settler = _settler(config, policy, record_time)
    out = []
    for i, (offset, key, value, stamp) in enumerate(records):
        if i in cuts:
            blob = settler.checkpoint()
            settler = _settler(config, policy, record_time)
            settler.restore(blob)
            assert settler.next_offset == offset or settler.next_offset is None
            assert settler.checkpoint() == blob  # capture(rebuild(x)) == x
        out += [(o.topic, o.key, o.value) for o in settler.handle(offset, key, value, stamp)]
    return out, settler.checkpoint()


def _world_records(data: st.DataObject, config: TrackerConfig) -> list[Record]:
    world = campaign.generate(Draws(data), config, beyond=data.draw(st.booleans()), steps=40)
    return [(i, key.encode() or None, value, at) for i, (at, _, key, value) in enumerate(world.records)]


@settings(max_examples=60, deadline=None)
@given(st.data(), st.booleans(), st.sampled_from(["emit", "drop"]))
def test_restored_settler_replays_byte_identically_on_adversarial_worlds(
        data: st.DataObject, record_time: bool, unconfirmed: str) -> None:
    # small memory bounds, so forgetting idle buffers and request ids happens across cuts too
    config = TrackerConfig(unconfirmed=unconfirmed, max_idle_buffers=2, max_request_ids=3,  # type: ignore[arg-type]
                           memory_ms=20_000, shadow_regions=1)
    policy = SafetyPolicy(max_per_session=2, max_per_repository=3)
    records = _world_records(data, config)
    cuts = set(data.draw(st.lists(st.integers(0, max(0, len(records) - 1)), max_size=6)))
    whole, end_state = _run(records, config, policy, record_time, set())
    cut, cut_state = _run(records, config, policy, record_time, cuts)
    assert cut == whole
    assert cut_state == end_state


def test_restored_settler_replays_byte_identically_on_simulated_sessions() -> None:
    events = simulate(SimulationConfig(sessions=6, seed=11, noise_rate=0.2))
    records: list[Record] = [(i, None, encode(e), None) for i, e in enumerate(events)]
    config = TrackerConfig()
    policy = SafetyPolicy(max_per_session=3)
    whole, end_state = _run(records, config, policy, False, set())
    assert sum(1 for t, _, _ in whole if t == "settled") > 5  # the stream settles something
    cuts = set(range(0, len(records), max(1, len(records) // 17)))
    cut, cut_state = _run(records, config, policy, False, cuts)
    assert cut == whole and cut_state == end_state


def test_checkpoint_carries_open_regions_and_is_small() -> None:
    events = simulate(SimulationConfig(sessions=4, seed=3))
    settler = PartitionSettler(0)
    for i, e in enumerate(events[: len(events) // 2]):
        settler.handle(i, None, encode(e))
    assert settler.tracker.open_regions() > 0
    blob = settler.checkpoint()
    state = checkpoint.loads(blob)
    assert sum(len(b.regions) for b in state.tracker.buffers) == settler.tracker.open_regions()
    restored = PartitionSettler(0)
    restored.restore(blob)
    assert restored.tracker.open_regions() == settler.tracker.open_regions()
    assert restored.safe_offset() == settler.safe_offset()


@pytest.mark.parametrize("blob, reason", [
    (b"", "bad magic"),
    (b"nope" + bytes(10), "bad magic"),
    (checkpoint.MAGIC + bytes([99]) + b"x", "version"),
    (checkpoint.MAGIC + bytes([checkpoint.VERSION]) + b"not zlib", "corrupt"),
    (checkpoint.MAGIC + bytes([checkpoint.VERSION]) + __import__("zlib").compress(b"\x93\x01\x02\x03"), "corrupt"),
])
def test_bad_checkpoint_bytes_raise_checkpoint_error(blob: bytes, reason: str) -> None:
    with pytest.raises(CheckpointError, match=reason):
        PartitionSettler(0).restore(blob)


def test_checkpoint_of_another_partition_is_refused() -> None:
    blob = PartitionSettler(3).checkpoint()
    with pytest.raises(CheckpointError, match="partition 3"):
        PartitionSettler(0).restore(blob)
