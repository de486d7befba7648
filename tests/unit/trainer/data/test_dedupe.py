"""Dedupe: exact repeats by id, near-duplicates by MinHash LSH (datasketch), deterministic whatever the order."""

from __future__ import annotations

import random

import msgspec

from settle.trainer.data.dedupe import dedupe, lsh_params
from tests.support.examples import make, scored

# --------------------------------------------------------------------------- helpers

FUNC = (
    "def total_price(items, tax_rate):\n"
    "    subtotal = sum(item.price * item.quantity for item in items)\n"
    "    discount = compute_discount(subtotal)\n"
    "    return round((subtotal - discount) * (1 + tax_rate), 2)\n"
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
