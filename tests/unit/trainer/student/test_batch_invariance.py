"""Batch invariance of the ONNX sampler on the CPU provider: an example's logits, samples and stop
reasons are the same bits whatever batch it is sampled in and whichever rows finish beside it.

The logit test is the sharp one: before each example had runs of its own, a prompt padded to a
longer neighbour's length moved its logits by ~1e-6, which only now and then flips a draw, so
comparing samples alone would rarely catch it. It watches the real session's outputs (the graph
still runs; nothing is replaced) and compares the rows of one example bit for bit.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")

from settle.streams.runtime.sampler import Sampler

#: prompt lengths: shorter and longer than each other, none a multiple of 16, far enough apart
#: that no two prompts reach the same position within NEW tokens
LENGTHS = (5, 23, 41, 77, 150, 301, 333)
NEW = 12
STOPS = list(range(3, 4096, 9))  # ~1 token in 9 ends a row: rows finish at scattered steps


@pytest.fixture(scope="module")
def pool() -> list[list[int]]:
    rng = np.random.default_rng(7)
    return [rng.integers(9, 4096, n).tolist() for n in LENGTHS]


class LogitWatch:
    """Runs the real ONNX Runtime session and keeps, per position, every decode row's top logits
    (bytes) in run order: an example's rows are the ones at its prompt length + step."""

    def __init__(self, session) -> None:  # type: ignore[no-untyped-def]
        self.session = session
        self.rows: dict[int, list[bytes]] = defaultdict(list)

    def run(self, names, feed):  # type: ignore[no-untyped-def]
        out = self.session.run(names, feed)
        if feed["position_ids"].shape[1] == 1:  # decode runs (a prefill feeds the whole prompt)
            for position, logits in zip(feed["position_ids"][:, 0], out[0]):
                self.rows[int(position)].append(logits.tobytes())
        return out

    def of(self, length: int) -> list[list[bytes]]:
        return [self.rows[length + step] for step in range(NEW)]


def _watched(student_dir: Path, **kw) -> tuple[Sampler, LogitWatch]:  # type: ignore[no-untyped-def]
    sampler = Sampler(student_dir, providers=["CPUExecutionProvider"], **kw)
    watch = LogitWatch(sampler.session)
    sampler.session = watch
    return sampler, watch


def test_cpu_samplers_are_batch_invariant_by_default(student_dir: Path) -> None:
    assert Sampler(student_dir, providers=["CPUExecutionProvider"]).batch_invariant


@pytest.mark.parametrize("neighbours", [(0,), (6,), (5, 6), (0, 1, 2, 3, 4, 5, 6)])
def test_logits_of_an_example_do_not_depend_on_its_neighbours(student_dir: Path, pool, neighbours) -> None:
    """Example 2 (41 tokens) alone, then beside shorter and longer prompts: the top-k logits of
    each of its rows at each step are the same bits. With one padded run per batch, a longer
    neighbour (index 5 or 6) changed them."""
    kw = {"k": 4, "max_new_tokens": NEW, "temperature": 1.0, "top_k": 50, "stop_token_ids": []}
    alone, watch_alone = _watched(student_dir)
    alone.sample([pool[2]], seeds=[1], **kw)
    want = watch_alone.of(LENGTHS[2])
    assert all(len(rows) == 4 for rows in want[:-1])
    batch = [pool[i] for i in neighbours if i != 2]
    seeds = [10 + j for j in range(len(batch))]
    batch.insert(len(batch) // 2, pool[2])
    seeds.insert(len(seeds) // 2, 1)
    together, watch = _watched(student_dir)
    together.sample(batch, seeds=seeds, **kw)
    assert watch.of(LENGTHS[2]) == want


def test_one_padded_run_is_what_changed_the_logits(student_dir: Path, pool) -> None:
    """The check above can fail: the same comparison with the whole batch in one padded run
    (what CUDA still does) sees other bits once a longer prompt sits beside the example."""
    kw = {"k": 4, "max_new_tokens": NEW, "temperature": 1.0, "top_k": 50, "stop_token_ids": []}
    alone, watch_alone = _watched(student_dir, batch_invariant=False)
    alone.sample([pool[2]], seeds=[1], **kw)
    padded, watch = _watched(student_dir, batch_invariant=False)
    padded.sample([pool[2], pool[6]], seeds=[1, 2], **kw)
    assert watch.of(LENGTHS[2]) != watch_alone.of(LENGTHS[2])


@pytest.mark.parametrize("io_binding", [False, True])
def test_samples_do_not_depend_on_the_batch(student_dir: Path, pool, io_binding: bool) -> None:
    """Every prompt alone, then all in batches of 1, 3, 5 and 16 (the pool repeated, so an example
    also sits beside itself), in two orders: same samples and stop reasons per (prompt, seed)."""
    kw = {"k": 3, "max_new_tokens": NEW, "temperature": 1.0, "top_k": 40, "stop_token_ids": STOPS, "return_stops": True}
    sampler = Sampler(student_dir, providers=["CPUExecutionProvider"], io_binding=io_binding)
    items = [(i, 100 + j) for j in range(3) for i in range(len(pool))]  # (prompt, seed): 21 examples
    want = {}
    for i, seed in items:
        tokens, stops = sampler.sample([pool[i]], seeds=[seed], **kw)
        want[i, seed] = (tokens[0], stops[0])
    assert len({tuple(map(tuple, w[0])) for w in want.values()}) > 1
    order = np.random.default_rng(0).permutation(len(items))
    for arrangement in (items, [items[j] for j in order]):
        for size in (1, 3, 5, 16):
            for at in range(0, len(arrangement), size):
                chunk = arrangement[at:at + size]
                tokens, stops = sampler.sample([pool[i] for i, _ in chunk], seeds=[s for _, s in chunk], **kw)
                got = {key: (t, s) for key, t, s in zip(chunk, tokens, stops)}
                assert got == {key: want[key] for key in chunk}, (size, at)
    assert sampler.stats.compactions > 0  # rows did finish beside others


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.lists(st.integers(0, len(LENGTHS) - 1), min_size=1, max_size=6),
       k=st.integers(1, 4), every=st.integers(2, 15), seed=st.integers(0, 10_000))
def test_batch_invariance_property(student_dir: Path, pool, which, k, every, seed) -> None:
    """Any mix of prompts (repeats included), any k, any stop density: each example's samples and
    stop reasons in the batch are those it draws alone."""
    sampler = Sampler(student_dir, providers=["CPUExecutionProvider"])
    kw = {"k": k, "max_new_tokens": 10, "temperature": 1.0, "top_k": 30,
              "stop_token_ids": list(range(seed % every, 4096, every)), "return_stops": True}
    seeds = [seed + j for j in range(len(which))]
    tokens, stops = sampler.sample([pool[i] for i in which], seeds=seeds, **kw)
    for j, i in enumerate(which):
        alone_tokens, alone_stops = sampler.sample([pool[i]], seeds=[seeds[j]], **kw)
        assert (tokens[j], stops[j]) == (alone_tokens[0], alone_stops[0])
