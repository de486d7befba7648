"""Items to micro-batches: right padding, truncation from the left, the seeded item stream."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from settle.trainer.finetune.batches import collate, count_targets, prepare_items, stream_indices  # noqa: E402


def make_item(prompt: list[int], target: list[int]) -> dict:
    """An item as settle.trainer.data.pairs makes it: labels -100 on the prompt, ids on the target."""
    return {"input_ids": prompt + target, "labels": [-100] * len(prompt) + target}


def test_collate_pads_right_with_pad_id_and_ignore_index():
    batch = collate([make_item([5, 6], [7]), make_item([5], [7, 8, 9, 10])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0], [5, 7, 8, 9, 10]]
    assert batch["labels"].tolist() == [[-100, -100, 7, -100, -100], [-100, 7, 8, 9, 10]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert count_targets(batch["labels"]) == 5


def test_prepare_items_truncates_from_the_left_and_drops_items_without_targets():
    items = [make_item([1, 2, 3, 4], [5, 6]), make_item([1, 2], []), {"input_ids": [9], "labels": [9]}]
    with pytest.warns(UserWarning, match="2 of 3"):
        out = prepare_items(items, max_tokens=3)
    assert out == [([4, 5, 6], [-100, 5, 6])]  # a label at position 0 is never predicted
    with pytest.raises(ValueError, match="labels"):
        prepare_items([{"input_ids": [1, 2], "labels": [1]}], None)


def test_item_stream_is_seeded_epochs_of_permutations():
    a = stream_indices(10, seed=3, start=0, count=30)
    assert all(sorted(a[i : i + 10]) == list(range(10)) for i in (0, 10, 20))
    assert a[:10] != a[10:20]  # each epoch shuffled anew
    assert stream_indices(10, seed=3, start=7, count=9) == a[7:16]  # any window, no state
    assert stream_indices(10, seed=4, start=0, count=10) != a[:10]
