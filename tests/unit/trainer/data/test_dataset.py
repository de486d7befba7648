"""The trainer's data path: read `kept` (commit after success), dedupe, split, render, tokenize."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from settle.schemas.codecs import encode
from settle.schemas.events import EditStep, Excerpt, PromptContext
from settle.schemas.examples import SettledExample
from settle.schemas.scored import BandPolicy, Decision, ScoredExample
from settle.streams.kafka.io import committed_offsets
from settle.streams.contracts.prompt import (
    EDITABLE_REGION_END,
    EDITABLE_REGION_START,
    ENDOFTEXT,
    SPECIAL_TOKENS,
    render_prompt,
    render_target,
)
from settle.streams.settings import KEPT, Settings
from settle.streams.kafka.topics import ensure_topics_sync
from settle.trainer.data.dataset import (
    IGNORE_INDEX,
    InvalidTrainingRecord,
    TrainingPair,
    commit_kept,
    decode_kept,
    dedupe,
    eval_bucket,
    load_jsonl,
    lsh_params,
    read_kept,
    render,
    split,
    tokenize_pairs,
    trainer_group_id,
)

# --------------------------------------------------------------------------- helpers

FUNC = (
    "def total_price(items, tax_rate):\n"
    "    subtotal = sum(item.price * item.quantity for item in items)\n"
    "    discount = compute_discount(subtotal)\n"
    "    return round((subtotal - discount) * (1 + tax_rate), 2)\n"
)


def make(
    id_: str,
    original: str = "x = 1\n",
    settled: str = "x = 2\n",
    *,
    session: str = "s",
    path: str = "a.py",
    cursor: int = 0,
    context: PromptContext = PromptContext(),
) -> SettledExample:
    return SettledExample(
        id=id_, request_id=f"r-{id_}", session_id=session, path=path, encoding="utf-16",
        requested_at_ms=0, settled_at_ms=1, original_text=original, settled_text=settled,
        cursor=cursor, context=context,
    )


def scored(example: SettledExample, policy: BandPolicy = BandPolicy()) -> ScoredExample:
    decision = Decision(decision="keep", reason="test", samples_used=4, solved=1, solve_rate=0.25, policy=policy)
    return ScoredExample(id=example.id, example=example, decision=decision, samples=["x"], model_version="m1")


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


# --------------------------------------------------------------------------- dedupe


def test_exact_dedupe_keeps_first_of_each_id_and_counts_repeats() -> None:
    a, b = make("a", FUNC, FUNC + "# a\n"), make("b", "y = 1\n", "y = 3\n")
    kept, stats = dedupe([a, b, a, a])
    assert [e.id for e in kept] == ["a", "b"]
    assert (stats.input, stats.exact_duplicates, stats.id_conflicts, stats.near_duplicates, stats.kept) == (4, 2, 0, 0, 2)


def test_same_id_with_different_content_is_a_counted_conflict() -> None:
    first, other = make("a", "x = 1\n", "x = 2\n"), make("a", "x = 1\n", "x = 9\n")
    kept, stats = dedupe([first, other])
    assert kept == [first] and stats.exact_duplicates == 1 and stats.id_conflicts == 1


def test_rescored_repeat_of_one_example_is_an_exact_duplicate_not_a_conflict() -> None:
    ex = make("a", FUNC, FUNC.replace("2)", "3)"))
    again = msgspec.structs.replace(scored(ex), model_version="m2", samples=["y"])
    kept, stats = dedupe([scored(ex), again])
    assert kept == [scored(ex)] and stats.exact_duplicates == 1 and stats.id_conflicts == 0


def test_near_duplicates_are_removed_and_different_examples_kept() -> None:
    # Near pair: the same edit of the same function, one identifier renamed (Jaccard ~0.9).
    near_a = make("n2", FUNC, FUNC.replace("tax_rate)", "tax_rate, currency)"))
    near_b = make("n1", FUNC.replace("quantity", "qty"), FUNC.replace("quantity", "qty").replace("tax_rate)", "tax_rate, currency)"))
    # Clearly different pair: other code, other edits.
    far_a = make("f1", "class Cart:\n    items: list\n", "class Cart:\n    items: list[Item]\n")
    far_b = make("f2", "for i in range(10):\n    print(i)\n", "for i in range(10):\n    log.info(i)\n")
    items = [near_a, far_a, near_b, far_b]
    kept, stats = dedupe(items)
    assert [e.id for e in kept] == ["f1", "f2", "n1"]  # sorted by id; of the near pair the smaller id stays
    assert stats.near_duplicates == 1 and stats.exact_duplicates == 0 and stats.kept == 3
    (dropped, kept_id, sim), = stats.near_pairs
    assert (dropped, kept_id) == ("n2", "n1") and 0.8 <= sim < 1.0
    for seed in range(5):  # deterministic whatever the input order
        shuffled = items[:]
        random.Random(seed).shuffle(shuffled)
        assert dedupe(shuffled)[0] == kept


def test_dedupe_threshold_separates_near_from_loosely_similar() -> None:
    base = make("a", FUNC, FUNC + "    # done\n")
    renamed = FUNC.replace("subtotal", "base")  # every line but one touched: Jaccard ~0.76
    loose = make("b", renamed, renamed + "    # done\n")
    assert dedupe([base, loose])[1].near_duplicates == 0
    kept, stats = dedupe([base, loose], threshold=0.6)
    assert kept == [base] and stats.near_pairs[0][:2] == ("b", "a") and 0.6 <= stats.near_pairs[0][2] < 0.8


def test_lsh_banding_keeps_recall_at_the_threshold() -> None:
    for threshold in (0.5, 0.7, 0.8, 0.9):
        bands, rows = lsh_params(threshold, 128)
        assert bands * rows <= 128 and 1 - (1 - threshold**rows) ** bands >= 0.99
    assert lsh_params(0.8, 128) == (21, 6)


def test_dedupe_accepts_scored_examples() -> None:
    a, b = scored(make("a", FUNC, FUNC + "#\n")), scored(make("b", FUNC, FUNC + "#\n"))
    kept, stats = dedupe([b, a, b])
    assert kept == [a] and stats.exact_duplicates == 1 and stats.near_duplicates == 1


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


# --------------------------------------------------------------------------- decoding and files


def test_load_jsonl_accepts_scored_and_settled_lines(tmp_path: Path) -> None:
    a, b = make("a"), make("b", "y\n", "z\n")
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(encode(scored(a)) + b"\n\n" + encode(b) + b"\n")
    assert load_jsonl(path) == [a, b]
    path.write_bytes(encode(a) + b"\n" + b'{"id": "broken"}\n')
    with pytest.raises(InvalidTrainingRecord, match=r"mixed.jsonl:2") as exc:
        load_jsonl(path)
    assert exc.value.reason == "invalid_schema"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"not json{", "malformed"),
        (b"[1, 2]", "not_an_object"),
        (b'{"v": 2, "id": "x"}', "unsupported_version"),
        (encode(make("a")), "not_scored"),
        (b'{"id": "x", "example": {}}', "invalid_schema"),
    ],
)
def test_decode_kept_classifies_bad_values(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidTrainingRecord) as exc:
        decode_kept(raw)
    assert exc.value.reason == reason


# --------------------------------------------------------------------------- the real broker


async def _produce(settings: Settings, values: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in values:
            await producer.send_and_wait(settings.topic(KEPT), value=value, key=key)
    finally:
        await producer.stop()


@pytest.mark.broker
@pytest.mark.slow
def test_read_kept_commits_only_when_told(settings: Settings) -> None:
    ensure_topics_sync(settings, (KEPT,))
    group = trainer_group_id(settings)
    first = [scored(make(f"a{i}", f"v = {i}\n", f"v = {i + 1}\n")) for i in range(6)]
    asyncio.run(_produce(settings, [(s.id.encode(), encode(s)) for s in first] + [(b"junk", b"not json{")]))

    batch = asyncio.run(read_kept(settings, group, idle_s=2.0))
    assert sorted(s.id for s in batch.scored) == sorted(s.id for s in first)
    assert [(u.key, u.reason) for u in batch.undecodable] == [(b"junk", "malformed")]
    assert batch.undecodable_by_reason == {"malformed": 1}
    assert batch.start_offsets == {p: 0 for p in range(settings.partitions)}
    assert sum(batch.end_offsets.values()) == 7 == batch.records_read

    # Not committed: a trainer that crashed now reads the same records again.
    again = asyncio.run(read_kept(settings, group, idle_s=2.0))
    assert sorted(s.id for s in again.scored) == sorted(s.id for s in first)
    assert again.end_offsets == batch.end_offsets and len(again.undecodable) == 1

    asyncio.run(commit_kept(settings, group, batch.end_offsets))
    assert asyncio.run(committed_offsets(settings, group, KEPT)) == batch.end_offsets
    second = [scored(make(f"b{i}", f"w = {i}\n", f"w = {i + 1}\n")) for i in range(3)]
    asyncio.run(_produce(settings, [(s.id.encode(), encode(s)) for s in second]))

    nxt = asyncio.run(read_kept(settings, group, idle_s=2.0))
    assert sorted(s.id for s in nxt.scored) == sorted(s.id for s in second) and nxt.undecodable == []
    assert nxt.examples == [s.example for s in nxt.scored]
    for p, end in nxt.end_offsets.items():
        assert nxt.start_offsets[p] == batch.end_offsets.get(p, 0) and end > nxt.start_offsets[p]

    # max_records stops early and reports only what it returned; another group starts from the beginning.
    capped = asyncio.run(read_kept(settings, group + "-other", idle_s=2.0, max_records=4))
    assert capped.records_read == 4 and sum(e - capped.start_offsets[p] for p, e in capped.end_offsets.items()) == 4
