"""Tiny student -> ONNX -> sampler, checked against transformers on the same weights.

Tolerances: fp32 ONNX logits within 1e-4 of transformers (measured ~3e-6) for a left-padded
prefill and shared-prefix decode steps, every row against transformers on its whole sequence;
greedy sampling equals ``generate(do_sample=False)`` token for token; sampled tokens follow
transformers' temperature/top-k/top-p warpers. The student is built once per session
(tokenizer trained on 30 stdlib files).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from settle.streams.runtime.sampler import GraphFormatError, Sampler, pick_tokens, sample_next  # noqa: E402
from settle.trainer.student.export import export_onnx, verify_export  # noqa: E402
from settle.trainer.student.build import (  # noqa: E402
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


def test_onnx_logits_match_transformers(student_dir, onnx_dir):
    # The full sorted vocabulary (top_k = V) of a padded prefill and of 3 shared-prefix steps.
    assert verify_export(student_dir, onnx_dir) < LOGIT_TOL
    assert verify_export(student_dir, onnx_dir, prompt_len=17, examples=3, per_example=4, steps=2, seed=1) < LOGIT_TOL


@pytest.mark.parametrize("model_type", ["qwen2", "llama", "qwen3"])
def test_shared_prefix_graph_matches_transformers_per_row(model_type):
    """The rewired attention itself (before export) on each supported architecture: k rows per
    example share one prefix, and each row's logits equal transformers on its own sequence."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from settle.trainer.student.shared_prefix import SharedPrefixLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        model_type, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=300, head_dim=16,
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    graph = SharedPrefixLM(model).eval()
    examples, per, width, layers = 2, 3, 7, 2
    ids = torch.randint(0, 300, (examples, width))
    mask = torch.ones(examples, width, dtype=torch.long)
    mask[0, :2] = 0
    full = torch.tensor(300)

    def kv(rows, length):
        return [torch.zeros(rows, 2, length, 16)] * (2 * layers)

    with torch.no_grad():
        out = graph(ids, (mask.cumsum(-1) - 1).clamp(min=0), torch.zeros(examples, 1, dtype=torch.long), mask,
                    full, *kv(examples, 1), *kv(examples, 0))
        prefix, past = out[2:], kv(examples * per, 0)
        seqs = [ids[r // per][mask[r // per].bool()].tolist() for r in range(examples * per)]
        for step in range(3):
            tok = torch.randint(0, 300, (examples * per, 1))
            for r, seq in enumerate(seqs):
                seq.append(int(tok[r]))
            pos = torch.tensor([[len(q) - 1] for q in seqs])
            out = graph(tok, pos, mask, torch.ones(examples * per, step + 1, dtype=torch.long), full, *prefix, *past)
            past = out[2:]
            ref = torch.stack([model(input_ids=torch.tensor([q])).logits[0, -1] for q in seqs])
            assert (ref.gather(1, out[1]) - out[0]).abs().max() < LOGIT_TOL
            assert (ref.sort(dim=1, descending=True).values - out[0]).abs().max() < LOGIT_TOL


def test_unsupported_architecture_is_refused():
    from transformers import AutoConfig, AutoModelForCausalLM

    from settle.trainer.student.shared_prefix import SharedPrefixLM

    config = AutoConfig.for_model("gpt2", n_embd=32, n_layer=1, n_head=2, vocab_size=50)
    with pytest.raises(ValueError, match="not supported"):
        SharedPrefixLM(AutoModelForCausalLM.from_config(config))


def test_old_flat_cache_export_is_refused(onnx_dir, tmp_path):
    import json
    import shutil

    shutil.copytree(onnx_dir, tmp_path / "old")
    info = json.loads((tmp_path / "old" / "onnx_config.json").read_text())
    del info["graph"]
    (tmp_path / "old" / "onnx_config.json").write_text(json.dumps(info))
    with pytest.raises(GraphFormatError, match="re-export"):
        Sampler(tmp_path / "old")


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


def test_prefill_memo_is_bounded_in_bytes(onnx_dir, prompts):
    probe = Sampler(onnx_dir)
    probe.sample(prompts[:1], k=1, max_new_tokens=1)
    one = probe.prefill_cache_held  # bytes for prompt 0
    sampler = Sampler(onnx_dir, prefill_cache_bytes=one)
    sampler.sample(prompts[1:2] + prompts[:1], k=2, max_new_tokens=2)  # prompt 0 is longer than 1
    assert sampler.prefill_cache_held == one and len(sampler._prefill_cache) == 1
    sampler.sample(prompts[:1], k=2, max_new_tokens=2, seed=1)
    assert sampler.stats.prefill_cache_hits == 1 and sampler.stats.prefill_runs == 2


@pytest.mark.parametrize("io_binding", [False, True])
def test_dropping_finished_rows_changes_no_sample(onnx_dir, prompts, io_binding):
    """Finished rows, and examples with no live row, leave the running batch (their caches are
    gathered out where they live); every sample and stop reason stays exactly what it was."""
    stops = list(range(3, 4096, 9))  # ~1 in 9 tokens ends a row: rows end at scattered steps
    kw = dict(k=3, max_new_tokens=20, temperature=1.0, top_k=40, seeds=[11, 12, 13], stop_token_ids=stops,
              return_stops=True)
    full = Sampler(onnx_dir, io_binding=io_binding, compact=False)
    dropped = Sampler(onnx_dir, io_binding=io_binding)
    want = full.sample(prompts, **kw)
    assert dropped.sample(prompts, **kw) == want
    assert dropped.stats.compactions > 0
    assert dropped.stats.row_steps < full.stats.row_steps
    assert dropped.stats.sampled_tokens == full.stats.sampled_tokens


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=st.integers(1, 4), every=st.integers(2, 12), which=st.lists(st.integers(0, 2), min_size=1, max_size=4),
       seed=st.integers(0, 1000))
def test_row_dropping_is_invisible_property(onnx_dir, prompts, k, every, which, seed):
    """Any k, any stop density, any mix (and repeats) of prompts: dropping finished rows leaves
    every sample and stop reason as they are with all rows kept to the end."""
    batch = [prompts[i] for i in which]
    kw = dict(k=k, max_new_tokens=12, temperature=1.0, top_k=30, seeds=[seed + i for i in range(len(batch))],
              stop_token_ids=list(range(seed % every, 4096, every)), return_stops=True)
    assert Sampler(onnx_dir).sample(batch, **kw) == Sampler(onnx_dir, compact=False).sample(batch, **kw)


def test_sample_text(onnx_dir):
    sampler = Sampler(onnx_dir)
    out = sampler.sample_text(["def f(x):", "import"], k=3, max_new_tokens=6, seed=0)
    assert len(out) == 2 and all(len(o) == 3 and all(isinstance(s, str) for s in o) for o in out)


@pytest.mark.parametrize(("top_k", "top_p"), [(0, 0.8), (12, 0.8), (12, 1.0)])
def test_sampling_follows_transformers_warpers(top_k, top_p):
    """Frequencies of ``sample_next`` equal the distribution transformers' temperature, top-k and
    top-p warpers leave (applied in generate's order), within 0.02 over 20k draws."""
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    rng = np.random.default_rng(0)
    vocab, temperature = 50, 0.7
    logits = rng.normal(size=(1, vocab)).astype(np.float32) * 3.0
    warped = torch.tensor(logits / temperature)
    if top_k:
        warped = TopKLogitsWarper(top_k)(None, warped)
    warped = TopPLogitsWarper(top_p)(None, warped)
    p = torch.softmax(warped, dim=-1).numpy()[0]
    draws = sample_next(np.repeat(logits, 20000, axis=0), temperature, top_p, rng, top_k=top_k)
    assert set(draws.tolist()) <= set(np.flatnonzero(p > 0))
    freq = np.bincount(draws, minlength=vocab) / len(draws)
    assert np.abs(freq - p).max() < 0.02
    assert (sample_next(logits, 0.0, top_p, rng) == logits.argmax(axis=1)).all()


def test_pick_tokens_keeps_the_top_token_and_never_picks_dropped_ones():
    values = np.array([[5.0, 1.0, 0.5, 0.0]], np.float32).repeat(4, axis=0)
    ids = np.array([[7, 3, 9, 1]]).repeat(4, axis=0)
    u = np.array([1e-12, 0.5, 0.999999, 1.0])
    # top_p tiny: only the top token; u = 1 (the last cdf point) must not fall on a dropped token
    assert pick_tokens(values, ids, 1.0, 1e-9, u).tolist() == [7, 7, 7, 7]
    assert pick_tokens(values, ids, 0.0, 0.5, u).tolist() == [7, 7, 7, 7]
    assert pick_tokens(values, ids, 1.0, 1.0, np.array([1.0] * 4)).tolist() == [1] * 4


def test_top_k_sampling_through_the_graph(onnx_dir, prompts):
    """With top_k the rows only ever take one of the step's top_k tokens: at top_k=1 that is
    greedy, whatever the temperature."""
    sampler = Sampler(onnx_dir)
    greedy = sampler.sample(prompts, k=2, max_new_tokens=12, temperature=0.0, stop_token_ids=[])
    assert sampler.sample(prompts, k=2, max_new_tokens=12, temperature=1.5, top_k=1, seed=3,
                          stop_token_ids=[]) == greedy
    a = sampler.sample(prompts, k=4, max_new_tokens=12, temperature=1.0, top_k=8, top_p=0.95, seed=3)
    assert a == sampler.sample(prompts, k=4, max_new_tokens=12, temperature=1.0, top_k=8, top_p=0.95, seed=3)
    assert a != greedy
    with pytest.raises(ValueError, match="top_k"):
        sampler.sample(prompts, k=2, max_new_tokens=4, top_k=-1)


def test_bf16_checkpoint_exports_to_an_fp16_graph_that_samples(hf, prompts, tmp_path):
    """Real students ship bf16 weights: the export casts them to an fp16 graph (ONNX Runtime's bf16
    coverage is thin), still within fp16 rounding of transformers (measured ~5e-3 here)."""
    import copy

    model, tok = hf
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")  # the fixture stays fp32
    tok.save_pretrained(tmp_path / "bf16")
    export_onnx(tmp_path / "bf16", tmp_path / "onnx", dtype="fp16", device="cpu")
    assert verify_export(tmp_path / "bf16", tmp_path / "onnx") < 5e-2
    sampler = Sampler(tmp_path / "onnx")
    assert sampler.dtype == np.float16
    rows = sampler.sample(prompts, k=3, max_new_tokens=8, top_k=20, top_p=0.9, seed=0, stop_token_ids=[])
    assert all(len(r) == 8 for per in rows for r in per)


def test_bootstrap_cached_before_a_layout_change_is_re_exported(bootstrapped_student, tmp_path):
    """A cached bootstrap whose graph predates this layout is re-exported from its weights, not
    retrained and not served as is."""
    import json
    import shutil

    from settle.trainer.student.bootstrap import BootstrapRecipe, bootstrap_student

    cached = shutil.copytree(bootstrapped_student, tmp_path / bootstrapped_student.name)
    config = cached / "onnx_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "graph": "shared-prefix/1"}))
    again = bootstrap_student(tmp_path, BootstrapRecipe(shape="small", steps=200, phase3_steps=0), progress=False)
    assert again == cached
    assert Sampler(again).sample(prompts=[[5, 6, 7]], k=2, max_new_tokens=3, stop_token_ids=[])
