"""Render and tokenize: the shared prompt format, the scored budget, labels masked to the target."""

from __future__ import annotations

import pytest

from settle.schemas.events import EditStep, Excerpt, PromptContext
from settle.schemas.examples import SettledExample
from settle.schemas.scored import BandPolicy
from settle.streams.contracts.prompt import (
    EDITABLE_REGION_END,
    EDITABLE_REGION_START,
    ENDOFTEXT,
    SPECIAL_TOKENS,
    render_prompt,
    render_target,
)
from settle.trainer.data.pairs import IGNORE_INDEX, TrainingPair, render, tokenize_pairs
from tests.support.examples import make, scored

# --------------------------------------------------------------------------- helpers

FUNC = (
    "def total_price(items, tax_rate):\n"
    "    subtotal = sum(item.price * item.quantity for item in items)\n"
    "    discount = compute_discount(subtotal)\n"
    "    return round((subtotal - discount) * (1 + tax_rate), 2)\n"
)


@pytest.fixture(scope="module")
def tokenizer():
    """A tiny byte-level BPE with every prompt marker as one token, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([FUNC, "x = 1\nx = 2\nprint(x)\n", "class A:\n    pass\n"] * 3, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=ENDOFTEXT, pad_token=ENDOFTEXT,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t != ENDOFTEXT],
    )


# --------------------------------------------------------------------------- render and tokenize


def _context_example(id_: str = "c", settled: str = "x = 2\nprint(x)\n") -> SettledExample:
    ctx = PromptContext(
        edit_history=[EditStep(path="a.py", old_text=f"old {i}\n", new_text=f"new {i}\n") for i in range(6)],
        excerpt=Excerpt(path="a.py", text=FUNC + "x = 1\n" + FUNC),
    )
    return make(id_, "x = 1\n", settled, cursor=2, context=ctx)


def test_render_uses_the_shared_prompt_format_and_the_scored_budget() -> None:
    ex = _context_example()
    pair = render(ex)
    assert pair == TrainingPair(render_prompt(ex), render_target(ex), "c")
    assert pair.prompt.endswith(EDITABLE_REGION_START) and pair.target == "x = 2\nprint(x)\n" + EDITABLE_REGION_END
    small = BandPolicy(max_prompt_chars=300)
    assert render(scored(ex, small)).prompt == render_prompt(ex, max_chars=300)
    assert render(scored(ex, small), max_chars=None).prompt == render_prompt(ex, max_chars=None)


def test_labels_mask_exactly_the_prompt(tokenizer) -> None:
    pairs = [render(_context_example("a")), render(make("b", "y = 1\n", "y = 22\n", cursor=3))]
    rows = tokenize_pairs(pairs, tokenizer, max_tokens=4096)
    assert len(rows) == 2 and rows.skipped == [] and rows.truncated == []
    for pair, row in zip(pairs, rows):
        p = tokenizer(pair.prompt, add_special_tokens=False)["input_ids"]
        t = tokenizer(pair.target, add_special_tokens=False)["input_ids"]
        assert row["input_ids"] == p + t
        assert row["input_ids"] == tokenizer(pair.prompt + pair.target, add_special_tokens=False)["input_ids"]
        assert row["labels"][: len(p)] == [IGNORE_INDEX] * len(p)
        assert row["labels"][len(p) :] == t and IGNORE_INDEX not in t
        assert row["attention_mask"] == [1] * len(p + t)
        assert tokenizer.decode(row["labels"][len(p) :]) == pair.target
        assert t[-1] == tokenizer.convert_tokens_to_ids(EDITABLE_REGION_END)
    assert tokenize_pairs(pairs, tokenizer.backend_tokenizer, max_tokens=4096) == rows  # a raw `tokenizers` one


def test_long_prompts_lose_tokens_on_the_left_and_long_targets_are_skipped(tokenizer) -> None:
    pair = render(_context_example())
    p = tokenizer(pair.prompt, add_special_tokens=False)["input_ids"]
    t = tokenizer(pair.target, add_special_tokens=False)["input_ids"]
    budget = len(t) + 10
    huge = TrainingPair("p" + EDITABLE_REGION_START, "z" * 40 * budget + EDITABLE_REGION_END, "huge")
    exact = TrainingPair(EDITABLE_REGION_START, pair.target, "exact")  # the target fills the whole budget
    rows = tokenize_pairs([huge, pair, exact], tokenizer, max_tokens=budget)
    assert rows.skipped == [0] and rows.truncated == [1] and len(rows) == 2
    row = rows[0]
    assert len(row["input_ids"]) == budget
    assert row["input_ids"] == p[-10:] + t  # the end of the prompt (region markers) survives
    assert row["labels"] == [IGNORE_INDEX] * 10 + t
    assert tokenize_pairs([pair], tokenizer, max_tokens=len(t)).skipped == [0]  # no prompt token left
    assert len(tokenize_pairs([pair], tokenizer, max_tokens=len(t), min_prompt_tokens=0)[0]["labels"]) == len(t)


def test_tokenizer_that_splits_markers_is_refused() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["x = 1"], trainer=trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    with pytest.raises(ValueError, match="single"):
        tokenize_pairs([render(make("a"))], tok, max_tokens=100)
