"""Bootstrap recipes: keys stay stable across added phases, the phase-3 curriculum's data."""

from __future__ import annotations

from pathlib import Path

from settle.streams.contracts.prompt import USER_CURSOR
from settle.trainer.student.bootstrap import (
    ARTIFACTS,
    RECIPES,
    BootstrapRecipe,
    _phase_pairs,
    artifact_name,
    first_line_of_insertion,
)
from settle.trainer.student.build import make_model_dir


def test_adding_a_phase_keeps_the_keys_of_the_shipped_recipes() -> None:
    default = RECIPES["default"]
    # the shipped artifacts are named by these keys; a new recipe field must not rename them
    assert default.key() == "9ee1bfd40a73" and default.first_phase().key() == "06bdf362a912"
    assert (ARTIFACTS / f"{artifact_name(default)}.tar.gz").exists()
    phase3 = RECIPES["phase3"]
    assert phase3.phase3_steps > 0 and phase3.key() != default.key()
    assert phase3.previous_phase() == default and default.previous_phase() == default.first_phase()


def test_first_line_of_insertion() -> None:
    assert first_line_of_insertion("abc") is None  # one line: the whole insertion already
    assert first_line_of_insertion("abc\n    d") == "abc"
    assert first_line_of_insertion("\n    foo()\n    bar") == "\n    foo()"  # a new line opens with its indent
    assert first_line_of_insertion("\n    foo()") is None
    assert first_line_of_insertion("x\n") == "x"


def test_phase3_pairs_add_first_lines_as_insertions(tmp_path: Path) -> None:
    from settle.trainer.student.build import load_tokenizer

    student = make_model_dir(tmp_path / "s", shape="tiny", max_files=8)
    tokenizer = load_tokenizer(student / "hf")
    recipe = BootstrapRecipe(phase3_steps=1, phase3_sessions=4, phase3_max_target_tokens=10**6)
    pairs = _phase_pairs(recipe, 3, tokenizer)
    firsts = [p for p in pairs if p.id.endswith(":first-line")]
    assert firsts and len(firsts) < len(pairs)
    by_id = {p.id: p for p in pairs}
    for p in firsts:
        whole = by_id[p.id.removesuffix(":first-line")]
        assert p.prompt == whole.prompt  # same prompt: only the target is cut
        assert p.target.startswith(USER_CURSOR) and whole.target.startswith(USER_CURSOR)
        assert whole.target.startswith(p.target.removesuffix("<|editable_region_end|>"))
    without = _phase_pairs(BootstrapRecipe(phase3_steps=1, phase3_sessions=4, phase3_max_target_tokens=10**6,
                                           phase3_first_lines=False), 3, tokenizer)
    assert len(without) == len(pairs) - len(firsts)
    capped = _phase_pairs(BootstrapRecipe(phase3_steps=1, phase3_sessions=4, phase3_max_target_tokens=8), 3, tokenizer)
    assert all(len(tokenizer(p.target)["input_ids"]) <= 8 for p in capped) and len(capped) < len(pairs)
