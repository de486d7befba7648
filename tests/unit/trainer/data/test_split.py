"""The held-out split: stable keyed hash, whole sessions on one side."""

from __future__ import annotations

import pytest

from settle.schemas.examples import SettledExample
from settle.trainer.data.split import eval_bucket, split
from tests.support.examples import make

# --------------------------------------------------------------------------- helpers

# --------------------------------------------------------------------------- split


def _sessions(n: int, per: int = 3) -> list[SettledExample]:
    return [make(f"e{s}-{i}", f"v{i} = {s}\n", f"v{i} = {s + 1}\n", session=f"session-{s}") for s in range(n) for i in range(per)]


def test_split_is_stable_and_never_splits_a_session() -> None:
    examples = _sessions(2000)
    train, held = split(examples, 0.1)
    assert split(examples, 0.1) == (train, held)
    assert len(train) + len(held) == len(examples)
    assert {e.session_id for e in train}.isdisjoint({e.session_id for e in held})
    assert 0.08 <= len({e.session_id for e in held}) / 2000 <= 0.12
    # input order kept on each side; more data never moves an existing session
    assert train == [e for e in examples if e in train]
    bigger_train, bigger_held = split(examples + _sessions(2500)[6000:], 0.1)
    assert set(e.id for e in held) <= set(e.id for e in bigger_held)
    assert set(e.id for e in train) <= set(e.id for e in bigger_train)


def test_split_uses_no_process_dependent_hash() -> None:
    # Pinned values: a change here would silently reshuffle every trainer's held-out set.
    assert eval_bucket("session-0") == pytest.approx(0.7123960143255809, abs=0)
    assert eval_bucket("session-0", salt="v2") != eval_bucket("session-0")


def test_split_by_other_keys_and_edge_fractions() -> None:
    examples = [make(f"e{i}", session=f"s{i}", path=f"repo{i % 7}/src/m{i}.py") for i in range(200)]
    train, held = split(examples, 0.3, by="path_root")
    assert {e.path.split("/")[0] for e in train}.isdisjoint({e.path.split("/")[0] for e in held})
    assert split(examples, 0.0) == (examples, [])
    assert split(examples, 1.0) == ([], examples)
    assert split(examples, 0.5, by=lambda e: "same")[0] in ([], examples)
    with pytest.raises(ValueError):
        split(examples, 1.5)
