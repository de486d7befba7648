"""Tiny student -> ONNX -> sampler, checked against transformers on the same weights.

Tolerances: fp32 ONNX logits within 1e-4 of transformers (measured ~2e-6) for a left-padded
prefill and a cached decode step; greedy sampling equals ``generate(do_sample=False)`` token for
token. The student is built once per session (tokenizer trained on 30 stdlib files).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from settle.streams.sampler import Sampler, sample_next  # noqa: E402
from settle.trainer.export import export_onnx, verify_export  # noqa: E402
from settle.trainer.student import (  # noqa: E402
    SPECIAL_TOKENS,
    build_student,
    load_student,
    stop_token_ids,
)

LOGIT_TOL = 1e-4
NEW = 24


@pytest.fixture(scope="session")
def student_dir(tmp_path_factory):
    return build_student(tmp_path_factory.mktemp("student"), shape="tiny", seed=0, max_files=30)


@pytest.fixture(scope="session")
def onnx_dir(student_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(student_dir, out)
    return out


@pytest.fixture(scope="session")
def hf(student_dir):
    return load_student(student_dir)


@pytest.fixture(scope="session")
def prompts(hf):
    _, tok = hf
    texts = [
        "def add(x, y):\n    return x + y\n\nclass Stack:\n    def push(self, item):",
        "import os\n",
        "<|editable_region_start|>for i in range(10):<|user_cursor_is_here|>\n    print(i)",
    ]
    return [tok.encode(t, add_special_tokens=False) for t in texts]


def hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False,
        max_new_tokens=n, min_new_tokens=n, pad_token_id=0,
    )
    return out[0, len(prompt):].tolist()


def test_tokenizer_keeps_special_tokens(hf):
    _, tok = hf
    assert len(tok) == 4096
    for t in SPECIAL_TOKENS:
        assert len(tok.encode(t, add_special_tokens=False)) == 1, t
    text = "<|excerpt|>x = 1<|user_cursor_is_here|>\n<|editable_region_end|><|endoftext|>"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert tok.eos_token_id == tok.pad_token_id == 0
    assert stop_token_ids(tok) == [2, 0]


def test_build_is_deterministic(student_dir, tmp_path):
    again = build_student(tmp_path, shape="tiny", seed=0, max_files=30)
    for name in ("model.safetensors", "tokenizer.json"):
        assert (again / name).read_bytes() == (student_dir / name).read_bytes(), name


def test_onnx_logits_match_transformers(student_dir, onnx_dir, tmp_path):
    # Last-position logits (what the sampler exports) and, separately, every position.
    assert verify_export(student_dir, onnx_dir) < LOGIT_TOL
    export_onnx(student_dir, tmp_path, all_logits=True)
    assert verify_export(student_dir, tmp_path, prompt_len=17, batch=3, seed=1) < LOGIT_TOL


@pytest.mark.parametrize("io_binding", [False, True])
def test_greedy_matches_generate(onnx_dir, hf, prompts, io_binding):
    model, _ = hf
    sampler = Sampler(onnx_dir, io_binding=io_binding)
    # Three prompts of different lengths in one call: exercises the left-padded shared batch.
    got = sampler.sample(prompts, k=2, max_new_tokens=NEW, temperature=0.0, stop_token_ids=[])
    for prompt, rows in zip(prompts, got):
        ref = hf_greedy(model, prompt, NEW)
        assert len(set(ref)) > 3  # the tiny student is not degenerate
        assert rows == [ref, ref]
    # A tiny top_p keeps only the top token: the same argmax path.
    assert sampler.sample(prompts[:1], 1, NEW, 1.0, 1e-9, 5, stop_token_ids=[])[0] == got[0][:1]


def test_sampling_deterministic_under_seed(onnx_dir, prompts):
    sampler = Sampler(onnx_dir)
    a = sampler.sample(prompts, k=4, max_new_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    b = sampler.sample(prompts, k=4, max_new_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    c = sampler.sample(prompts, k=4, max_new_tokens=16, temperature=1.0, top_p=0.9, seed=8)
    assert a == b
    assert a != c
    assert len({tuple(s) for s in a[0]}) > 1  # k samples of one prompt differ


def test_stop_tokens_end_rows(onnx_dir, hf, prompts):
    model, _ = hf
    ref0, ref1 = hf_greedy(model, prompts[0], NEW), hf_greedy(model, prompts[1], NEW)
    stop = next(t for t in ref0[3:] if t not in ref1)  # ends prompt 0's rows, not prompt 1's
    cut = ref0.index(stop)
    sampler = Sampler(onnx_dir)
    got = sampler.sample(prompts[:2], k=2, max_new_tokens=NEW, temperature=0, stop_token_ids=[stop])
    assert got[0] == [ref0[:cut]] * 2  # trimmed, stop token excluded
    assert got[1] == [ref1] * 2  # the other rows keep decoding to the budget
    # When every row has stopped, decoding stops too.
    steps = sampler.stats.decode_steps
    sampler.sample(prompts[:1], k=3, max_new_tokens=NEW, temperature=0, stop_token_ids=[stop])
    assert sampler.stats.decode_steps - steps == cut
    # Defaults are the export's stop tokens (<|editable_region_end|>, <|endoftext|>).
    assert sampler.stop_token_ids == [2, 0]


def test_k_samples_share_one_prefill(onnx_dir, prompts):
    sampler = Sampler(onnx_dir, prefill_cache_size=0)
    sampler.sample(prompts, k=8, max_new_tokens=10, stop_token_ids=[])
    assert sampler.stats.prefill_runs == len(prompts)
    assert sampler.stats.prefill_tokens == sum(map(len, prompts))
    assert sampler.stats.decode_steps == 9  # all 3*8 rows decode as one batch
    assert sampler.stats.sampled_tokens == len(prompts) * 8 * 10
    # Second round for the same prompts (another seed) reuses the cached prefill.
    cached = Sampler(onnx_dir)
    first = cached.sample(prompts, k=4, max_new_tokens=8, seed=1)
    second = cached.sample(prompts, k=4, max_new_tokens=8, seed=2)
    assert cached.stats.prefill_runs == len(prompts)
    assert cached.stats.prefill_cache_hits == len(prompts)
    assert first != second


def test_sample_text(onnx_dir):
    sampler = Sampler(onnx_dir)
    out = sampler.sample_text(["def f(x):", "import"], k=3, max_new_tokens=6, seed=0)
    assert len(out) == 2 and all(len(o) == 3 and all(isinstance(s, str) for s in o) for o in out)


@pytest.mark.parametrize("vocab", [50, 3000])  # 3000 > candidate cut-off: the full-sort path
def test_sample_next_follows_hf_top_p(vocab):
    from transformers.generation.logits_process import TopPLogitsWarper

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, vocab)).astype(np.float32) * (4.0 if vocab == 50 else 0.5)
    temperature, top_p = 0.7, 0.8
    warped = TopPLogitsWarper(top_p)(None, torch.tensor(logits / temperature))
    kept = set(np.flatnonzero(np.isfinite(warped.numpy()[0])))
    draws = sample_next(np.repeat(logits, 20000, axis=0), temperature, top_p, rng)
    assert set(draws.tolist()) <= kept
    if vocab == 50:  # frequencies follow the renormalised nucleus
        p = torch.softmax(warped, dim=-1).numpy()[0]
        freq = np.bincount(draws, minlength=vocab) / len(draws)
        assert np.abs(freq - p).max() < 0.02
    else:
        assert len(set(draws.tolist())) > 0.9 * len(kept)
    assert (sample_next(logits, 0.0, top_p, rng) == logits.argmax(axis=1)).all()
