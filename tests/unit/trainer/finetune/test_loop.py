"""Fine-tuning the tiny student: loss masking, learning, kill/resume determinism, LoRA merge, torchrun.

Items are synthetic: random prompt tokens followed by one fixed target string, labelled the way
settle.trainer.data.pairs labels items (-100 on the prompt, token ids on the target). The student is built
once per session (tokenizer trained on 20 stdlib files). Torch runs on one thread here: these
models are tiny, and on shared cores extra threads only make it slower.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from settle.trainer.finetune.batches import collate, count_targets  # noqa: E402
from settle.trainer.finetune.checkpoint import latest_checkpoint  # noqa: E402
from settle.trainer.finetune.config import FinetuneConfig  # noqa: E402
from settle.trainer.finetune.loop import finetune  # noqa: E402
from settle.trainer.finetune.loss import eval_loss  # noqa: E402
from settle.trainer.student.build import build_student, load_student  # noqa: E402

TARGET = " return x + 1\n<|editable_region_end|>"
# Quick settings for the tiny model: a high learning rate learns a fixed target in a few dozen steps.
# CPU float32 even where CUDA exists, so the exact-match checks hold everywhere; the CUDA test is apart.
QUICK = FinetuneConfig(steps=12, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=2, seed=0, device="cpu",
                       dtype="float32")


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def student_dir(tmp_path_factory) -> Path:
    return build_student(tmp_path_factory.mktemp("ft-student"), shape="tiny", seed=0, max_files=20)


@pytest.fixture(scope="session")
def tok(student_dir):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(student_dir)


def make_item(prompt: list[int], target: list[int]) -> dict:
    """An item as settle.trainer.data.pairs makes it: labels -100 on the prompt, ids on the target."""
    return {"input_ids": prompt + target, "labels": [-100] * len(prompt) + target}


def make_items(tok, n: int, seed: int, varied: bool = False) -> list[dict]:
    """Random prompts, then TARGET (``varied``: a random-length prefix of it, so items weigh differently)."""
    rng = random.Random(seed)
    target = tok(TARGET, add_special_tokens=False)["input_ids"]
    first = len(tok.all_special_ids)  # ordinary tokens only in prompts
    return [
        make_item(
            [rng.randrange(first, len(tok)) for _ in range(rng.randrange(4, 16))],
            target[: rng.randrange(1, len(target) + 1)] if varied else target,
        )
        for _ in range(n)
    ]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(model_dir) / "model.safetensors")


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= atol, f"max weight difference {worst}"


# ----------------------------------------------------------------------------------------------
# the loss counts target tokens only


def test_loss_counts_only_target_positions(student_dir, tok):
    model, _ = load_student(student_dir)
    item = make_items(tok, 1, seed=1)[0]
    ids = torch.tensor([item["input_ids"]])
    labels = torch.tensor([item["labels"]])
    with torch.no_grad():
        logits = model(ids, use_cache=False).logits[0]
        model_loss = float(model(ids, labels=labels, use_cache=False).loss)
    # Manual cross-entropy: position t-1 predicts token t, for target positions t only.
    targets = [t for t, label in enumerate(item["labels"]) if label != -100]
    manual = torch.nn.functional.cross_entropy(logits[[t - 1 for t in targets]], ids[0, targets])
    assert model_loss == pytest.approx(float(manual), rel=1e-5)
    assert eval_loss(model, [item]) == pytest.approx(float(manual), rel=1e-5)

    # Labelling the prompt tokens too changes the loss: -100 is what keeps them out.
    full = {"input_ids": item["input_ids"], "labels": list(item["input_ids"])}
    assert abs(eval_loss(model, [full]) - float(manual)) > 0.05


def test_eval_loss_is_a_token_weighted_mean_whatever_the_padding(student_dir, tok):
    model, _ = load_student(student_dir)
    items = make_items(tok, 5, seed=2)
    items[0] = make_item(items[0]["input_ids"][:3], [11, 12, 13, 14, 15, 16, 17, 18])  # a different target length
    singles = [(eval_loss(model, [it]), count_targets(collate([it], 0)["labels"])) for it in items]
    mean = sum(loss * n for loss, n in singles) / sum(n for _, n in singles)
    assert eval_loss(model, items, batch_size=5) == pytest.approx(mean, rel=1e-5)
    assert eval_loss(model, items, batch_size=2) == pytest.approx(mean, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# training


def test_learns_a_fixed_target(student_dir, tok, tmp_path):
    items, evals = make_items(tok, 64, seed=10), make_items(tok, 16, seed=11)
    base, _ = load_student(student_dir)
    before = eval_loss(base, evals)
    config = dataclasses_replace(QUICK, steps=40, batch_size=8, eval_every=10, checkpoint_every=20)
    result = finetune(student_dir, items, tmp_path, config, eval_items=evals, progress=False)

    assert result.steps == 40 and result.resumed_from is None
    assert [s for s, _ in result.eval_losses] == [10, 20, 30, 40]
    after = result.eval_losses[-1][1]
    assert before > 6.0 and after < 0.1 * before, (before, result.eval_losses)
    assert result.final_train_loss < 0.1 * before

    # The saved model is an ordinary student directory and greedily writes the target after a new prompt.
    model, tok2 = load_student(result.model_dir)
    assert eval_loss(model, evals) == pytest.approx(after, rel=1e-4)
    target = tok(TARGET, add_special_tokens=False)["input_ids"]
    prompt = torch.tensor([make_items(tok, 1, seed=99)[0]["input_ids"][: -len(target)]])
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=len(target), do_sample=False)
    assert tok2.decode(out[0, prompt.shape[1] :]) == TARGET

    assert latest_checkpoint(tmp_path).name == "step-40"
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 41))


def test_grad_accumulation_weighs_every_target_token_the_same(student_dir, tok, tmp_path):
    """A step of 4 items gives the same update as 1x4, 2x2 or 4x1 micro-batches (items of unequal
    target lengths): the loss is normalised by the step's target tokens, not averaged per micro-batch."""
    items = make_items(tok, 16, seed=50, varied=True)
    runs = {}
    for batch_size, accum in [(4, 1), (2, 2), (1, 4)]:
        config = dataclasses_replace(QUICK, steps=3, batch_size=batch_size, grad_accum=accum)
        runs[batch_size] = finetune(student_dir, items, tmp_path / str(batch_size), config, progress=False)
    for b in (2, 1):
        assert runs[b].final_train_loss == pytest.approx(runs[4].final_train_loss, rel=1e-5)
        assert_same_weights(weights(runs[b].model_dir), weights(runs[4].model_dir), atol=1e-4)


class Crash(Exception):
    pass


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora-dropout"])
def test_killed_run_resumes_to_the_same_weights(student_dir, tok, tmp_path, lora):
    """12 steps straight vs. a run that dies at step 7 (last checkpoint: step 4) and is resumed.

    LoRA with dropout consumes the RNG every step, so it also checks the RNG state is restored.
    """
    items, evals = make_items(tok, 24, seed=20), make_items(tok, 4, seed=21)
    config = dataclasses_replace(QUICK, checkpoint_every=4, eval_every=3, lora=lora, lora_dropout=0.1)
    straight = finetune(student_dir, items, tmp_path / "straight", config, eval_items=evals, progress=False)

    def die_at_7(step, loss):
        if step == 7:
            raise Crash

    run = tmp_path / "crashed"
    with pytest.raises(Crash):
        finetune(student_dir, items, run, config, eval_items=evals, progress=False, on_step=die_at_7)
    assert latest_checkpoint(run).name == "step-4" and not (run / "model").exists()

    resumed = finetune(student_dir, items, run, config, eval_items=evals, progress=False)
    assert resumed.resumed_from == 4 and resumed.steps == 12
    assert_same_weights(weights(resumed.model_dir), weights(straight.model_dir), atol=1e-6)
    assert resumed.final_train_loss == pytest.approx(straight.final_train_loss, rel=1e-5)
    assert [s for s, _ in resumed.eval_losses] == [3, 6, 9, 12]
    assert [e for _, e in resumed.eval_losses] == pytest.approx([e for _, e in straight.eval_losses], rel=1e-5)
    # The log is rewritten past the checkpoint: each step once.
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 13))

    # Resuming a finished run does no training and keeps the result.
    again = finetune(student_dir, items, run, config, eval_items=evals, progress=False)
    assert again.resumed_from == 12 and again.eval_losses == resumed.eval_losses
    assert_same_weights(weights(again.model_dir), weights(straight.model_dir), atol=0)


def test_lora_merges_into_a_plain_model(student_dir, tok, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen2ForCausalLM

    items = make_items(tok, 32, seed=30)
    config = dataclasses_replace(QUICK, steps=30, lr=1e-2, min_lr=1e-3, lora=True, lora_r=8, lora_alpha=16,
                                 lora_dropout=0.0)
    result = finetune(student_dir, items, tmp_path, config, progress=False)

    base, after = weights(student_dir), weights(result.model_dir)
    assert after.keys() == base.keys()  # no adapter tensors left: a plain Qwen2 checkpoint
    changed = {k for k in base if not torch.equal(base[k], after[k])}
    assert any("q_proj" in k for k in changed)
    assert all(any(m in k for m in config.lora_target_modules) for k in changed)  # MLP, norms, head untouched

    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert type(model) is Qwen2ForCausalLM
    base_model, _ = load_student(student_dir)
    assert eval_loss(model, items) < 0.7 * eval_loss(base_model, items)

    # The checkpoint holds the adapters only; base + adapters computes what the merged model does.
    adapters = weights(latest_checkpoint(tmp_path))
    assert adapters and all("lora_" in k for k in adapters)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=list(config.lora_target_modules), task_type="CAUSAL_LM")
    peft_model = get_peft_model(base_model, lora)
    missing, unexpected = peft_model.load_state_dict(adapters, strict=False)
    assert not unexpected
    ids = torch.tensor([items[0]["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, peft_model(ids).logits, atol=1e-4, rtol=1e-4)


def test_final_model_keeps_the_students_dtype(student_dir, tok, tmp_path):
    """Training runs on float32 master weights; a bf16 student is published back as bf16."""
    model, _ = load_student(student_dir, dtype="bfloat16")
    model.save_pretrained(tmp_path / "bf16")
    tok.save_pretrained(tmp_path / "bf16")
    config = dataclasses_replace(QUICK, steps=2)
    result = finetune(tmp_path / "bf16", make_items(tok, 8, seed=70), tmp_path / "run", config, progress=False)
    assert {t.dtype for t in weights(result.model_dir).values()} == {torch.bfloat16}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cuda_autocast_learns_and_resumes(student_dir, tok, tmp_path, dtype):
    """Autocast over float32 master weights (fp16 with a GradScaler, whose state is checkpointed)."""
    items, evals = make_items(tok, 64, seed=60), make_items(tok, 16, seed=61)
    base, _ = load_student(student_dir)
    before = eval_loss(base, evals)
    config = dataclasses_replace(QUICK, steps=40, batch_size=8, checkpoint_every=10, device="cuda", dtype=dtype)
    straight = finetune(student_dir, items, tmp_path / "straight", config, eval_items=evals, progress=False)
    assert straight.eval_losses[-1][1] < 0.1 * before

    def die_at_25(step, loss):
        if step == 25:
            raise Crash

    with pytest.raises(Crash):
        finetune(student_dir, items, tmp_path / "run", config, eval_items=evals, progress=False, on_step=die_at_25)
    resumed = finetune(student_dir, items, tmp_path / "run", config, eval_items=evals, progress=False)
    assert resumed.resumed_from == 20
    # CUDA kernels (atomics in the embedding backward) need not be bit-reproducible: a loose bound.
    assert_same_weights(weights(resumed.model_dir), weights(straight.model_dir), atol=1e-3)


def dataclasses_replace(config: FinetuneConfig, **changes) -> FinetuneConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


# ----------------------------------------------------------------------------------------------
# torchrun


@pytest.mark.slow
def test_torchrun_two_gloo_processes_match_one_process(student_dir, tok, tmp_path):
    """2 CPU processes (gloo) split each step's micro-batches; the weights equal a 1-process run's."""
    items = make_items(tok, 16, seed=40, varied=True)  # ranks see different numbers of target tokens
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in items))
    config = dataclasses_replace(QUICK, steps=4, batch_size=2, grad_accum=2, checkpoint_every=2)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "settle.trainer.finetune", "--model", str(student_dir), "--data", str(data),
        "--out", str(tmp_path / "ddp"), "--no-progress", "--steps", "4", "--batch-size", "2",
        "--grad-accum", "2", "--lr", str(QUICK.lr), "--min-lr", str(QUICK.min_lr), "--warmup-steps", "2",
        "--checkpoint-every", "2", "--device", "cpu", "--dtype", "float32",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["steps"] == 4  # rank 0 alone reports

    single = finetune(student_dir, items, tmp_path / "single", config, progress=False)
    assert summaries[0]["final_train_loss"] == pytest.approx(single.final_train_loss, rel=1e-4)
    assert_same_weights(weights(tmp_path / "ddp" / "model"), weights(single.model_dir), atol=1e-4)
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["step-2", "step-4"]
    # Same loss and gradient norm at every step: the ranks' halves add up to the whole step.
    logs = [
        [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
        for run in (tmp_path / "ddp", tmp_path / "single")
    ]
    assert [r["tokens"] for r in logs[0]] == [r["tokens"] for r in logs[1]]
    for key in ("loss", "grad_norm"):
        assert [r[key] for r in logs[0]] == pytest.approx([r[key] for r in logs[1]], rel=1e-4)
