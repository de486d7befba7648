from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settle.schemas.events import Diagnostic, EditStep, Excerpt, PromptContext
from settle.schemas.examples import SettledExample
from settle.streams.contracts.prompt import (
    DIAGNOSTICS,
    EDIT_HISTORY,
    EDITABLE_REGION_END,
    EDITABLE_REGION_START,
    ENDOFTEXT,
    EXCERPT,
    OUTPUT,
    RELATED,
    SPECIAL_TOKENS,
    STRUCTURAL_MARKERS,
    USER_CURSOR,
    CrossesRegionBoundary,
    OutputParseError,
    PrematureEndOfText,
    UnrenderableExample,
    UnterminatedOutput,
    inserted_at_cursor,
    parse_output,
    render_prompt,
    render_target,
)

#: every prompt's markers in order, whatever its context (empty sections keep their marker)
SECTIONS = [
    EDIT_HISTORY, EXCERPT, EDITABLE_REGION_START, USER_CURSOR, EDITABLE_REGION_END, RELATED, DIAGNOSTICS, OUTPUT,
    EDITABLE_REGION_START,
]


def make(
    original: str = "x = 1\n",
    settled: str = "x = 2\n",
    cursor: int = 4,
    context: PromptContext = PromptContext(),
    path: str = "a.py",
) -> SettledExample:
    return SettledExample(
        id="id",
        request_id="req",
        session_id="sess",
        path=path,
        encoding="utf-16",
        requested_at_ms=0,
        settled_at_ms=1,
        original_text=original,
        settled_text=settled,
        cursor=cursor,
        context=context,
    )


def excerpt_region(prompt: str) -> str:
    """The region as shown in the excerpt section (first start marker), cursor stripped."""
    after = prompt.split(EDITABLE_REGION_START, 1)[1]
    return parse_output(after.replace(USER_CURSOR, "", 1))


# text without any special token string, including code-point-heavy characters
safe_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60).filter(
    lambda s: "<|" not in s
)


def test_special_tokens_exact() -> None:
    assert SPECIAL_TOKENS == (
        "<|endoftext|>",
        "<|editable_region_start|>",
        "<|editable_region_end|>",
        "<|user_cursor_is_here|>",
        "<|edit_history|>",
        "<|excerpt|>",
        "<|related|>",
        "<|diagnostics|>",
        "<|output|>",
    )
    assert set(STRUCTURAL_MARKERS) <= set(SPECIAL_TOKENS)


def test_full_layout_exact() -> None:
    ex = make(
        context=PromptContext(
            edit_history=[EditStep("a.py", "a\nb\n", "a\nc\n")],
            excerpt=Excerpt("a.py", "import os\n\nx = 1\nprint(x)\n"),
            related=[Excerpt("b.py", "def f(): pass")],
            diagnostics=[Diagnostic("undefined name", severity="warning")],
        )
    )
    assert render_prompt(ex) == (
        "<|edit_history|>\n"
        "--- a/a.py\n+++ b/a.py\n@@\n a\n-b\n+c\n"
        "<|excerpt|>\n"
        "File: a.py\n"
        "import os\n\n<|editable_region_start|>x = <|user_cursor_is_here|>1\n<|editable_region_end|>print(x)\n"
        "<|related|>\n"
        "File: b.py\ndef f(): pass\n"
        "<|diagnostics|>\n"
        "warning: undefined name\n"
        "<|output|>\n"
        "<|editable_region_start|>"
    )
    assert render_target(ex) == "x = 2\n<|editable_region_end|>"


def test_empty_context_keeps_every_section() -> None:
    prompt = render_prompt(make())
    markers = [m for m in re.findall(r"<\|[a-z_]+\|>", prompt)]
    assert markers == SECTIONS
    assert "File: a.py\n" in prompt


@settings(max_examples=150, deadline=None)
@given(original=safe_text, settled=safe_text, data=st.data())
def test_round_trips(original: str, settled: str, data: st.DataObject) -> None:
    cursor = data.draw(st.integers(0, len(original)))
    before = data.draw(safe_text)
    after = data.draw(safe_text)
    ex = make(original, settled, cursor, PromptContext(excerpt=Excerpt("a.py", before + original + after)))
    prompt = render_prompt(ex, max_chars=None)
    target = render_target(ex)
    # the model's continuation parses back to the settled text
    assert parse_output(target, example=ex) == settled
    assert parse_output(target + ENDOFTEXT, example=ex) == settled
    # insertion form exactly when the edit is an insertion at the cursor
    assert target.startswith(USER_CURSOR) == (
        settled.startswith(original[:cursor]) and settled.endswith(original[cursor:]) and len(settled) >= len(original)
    )
    # the excerpt shows the original region exactly, cursor at the right code point
    assert excerpt_region(prompt) == original
    shown = prompt.split(EDITABLE_REGION_START, 1)[1].split(EDITABLE_REGION_END, 1)[0]
    assert shown.index(USER_CURSOR) == cursor
    assert prompt.endswith(OUTPUT + "\n" + EDITABLE_REGION_START)
    assert render_prompt(ex, max_chars=None) == prompt  # deterministic


def test_region_missing_from_excerpt_is_rendered_alone() -> None:
    ex = make(context=PromptContext(excerpt=Excerpt("b.py", "something else entirely\n")))
    prompt = render_prompt(ex)
    assert "something else" not in prompt
    assert (
        "<|excerpt|>\nFile: a.py\n<|editable_region_start|>x = <|user_cursor_is_here|>1\n<|editable_region_end|>\n<|related|>"
        in prompt
    )


def test_empty_region_is_rendered_alone() -> None:
    # an empty region matches anywhere in the excerpt, so it cannot be placed
    ex = make("", "y = 3\n", 0, PromptContext(excerpt=Excerpt("a.py", "a\nb\n")))
    prompt = render_prompt(ex)
    assert "File: a.py\n<|editable_region_start|><|user_cursor_is_here|><|editable_region_end|>\n" in prompt
    assert "a\nb\n" not in prompt


def test_repeated_region_uses_occurrence_nearest_the_middle() -> None:
    text = "x = 1\n" + "pad\n" * 5 + "x = 1\n" + "pad\n" * 5 + "x = 1\n" + "end\n"
    prompt = render_prompt(make(context=PromptContext(excerpt=Excerpt("a.py", text))), max_chars=None)
    section = prompt.split(EXCERPT + "\n", 1)[1].split(RELATED, 1)[0]
    before = section.split(EDITABLE_REGION_START, 1)[0]
    assert before == "File: a.py\n" + "x = 1\n" + "pad\n" * 5


def test_no_excerpt_uses_example_path() -> None:
    prompt = render_prompt(make(path="src/main.rs"))
    assert "File: src/main.rs\n<|editable_region_start|>" in prompt


def test_excerpt_without_trailing_newline() -> None:
    ex = make("x", "y", 1, PromptContext(excerpt=Excerpt("a.py", "a = x")))
    assert "File: a.py\na = <|editable_region_start|>x<|user_cursor_is_here|><|editable_region_end|>\n<|related|>" in (
        render_prompt(ex)
    )


def test_edit_history_diff_rendering() -> None:
    ctx = PromptContext(
        edit_history=[
            EditStep("a.py", "", "new\n"),
            EditStep("a.py", "same\n", "same\n"),  # no change: rendered as nothing
            EditStep("b.py", "-- sql comment\nkeep\n", "keep\n"),
        ]
    )
    history = render_prompt(make(context=ctx)).split(EDIT_HISTORY + "\n", 1)[1].split(EXCERPT, 1)[0]
    assert history == (
        "--- a/a.py\n+++ b/a.py\n@@\n+new\n"
        "--- a/b.py\n+++ b/b.py\n@@\n--- sql comment\n keep\n"
    )


def test_special_tokens_in_context_are_defused() -> None:
    ctx = PromptContext(
        edit_history=[EditStep("a.py", "", "s = '<|output|>'\n")],
        excerpt=Excerpt("a.py", "END = '<|editable_region_end|>'\nx = 1\n"),
        related=[Excerpt("b.py", "<|endoftext|>")],
        diagnostics=[Diagnostic("bad <|excerpt|>")],
    )
    prompt = render_prompt(make(context=ctx))
    structural = re.findall("|".join(re.escape(t) for t in SPECIAL_TOKENS), prompt)
    assert structural == SECTIONS
    assert "END = '< |editable_region_end|>'\n" in prompt
    assert "bad < |excerpt|>" in prompt


@pytest.mark.parametrize("field", ["original", "settled"])
def test_special_token_in_region_is_unrenderable(field: str) -> None:
    ex = make(**{field: "x = '<|editable_region_end|>'\n"}, cursor=0)  # type: ignore[arg-type]
    with pytest.raises(UnrenderableExample) as err:
        render_prompt(ex)
    assert err.value.reason == "special_token_in_region"
    with pytest.raises(UnrenderableExample):
        render_target(ex)


@pytest.mark.parametrize("cursor", [-1, 7])
def test_cursor_out_of_range(cursor: int) -> None:
    with pytest.raises(UnrenderableExample) as err:
        render_prompt(make(cursor=cursor))
    assert err.value.reason == "cursor_out_of_range"


def test_cursor_counts_code_points() -> None:
    ex = make("a😀b", "ab", 2)
    assert f"a😀{USER_CURSOR}b" in render_prompt(ex)


# --------------------------------------------------------------------------- truncation


def _truncation_example() -> tuple[SettledExample, list[tuple[str, str]]]:
    """An example whose every droppable piece carries a unique tag, in drop order."""
    history = [EditStep("h.py", "", f"hist{i}\n") for i in range(3)]  # hist0 is the oldest
    related = [Excerpt("r.py", f"rel{i}\n") for i in range(3)]  # rel2 is the least relevant
    before = "".join(f"pre{i}\n" for i in range(6))  # pre0 is the farthest
    after = "".join(f"post{i}\n" for i in range(6))  # post5 is the farthest
    diagnostics = [Diagnostic(f"diag{i}") for i in range(2)]
    ex = make(
        "region = 1\n",
        "region = 2\n",
        3,
        PromptContext(
            edit_history=history,
            excerpt=Excerpt("a.py", before + "region = 1\n" + after),
            related=related,
            diagnostics=diagnostics,
        ),
    )
    # the documented drop order; excerpt lines farthest first, ties dropping the line after
    order = [f"hist{i}" for i in range(3)] + [f"rel{i}" for i in (2, 1, 0)]
    for d in range(5, -1, -1):
        order += [f"post{d}", f"pre{5 - d}"]
    order += ["diag1", "diag0"]
    return ex, [(tag, tag + "\n") for tag in order]


def test_truncation_order_and_budget() -> None:
    ex, pieces = _truncation_example()
    full = render_prompt(ex, max_chars=None)
    assert render_prompt(ex, max_chars=len(full)) == full
    minimal = render_prompt(ex, max_chars=1)
    for tag, _ in pieces:
        assert tag not in minimal
    assert excerpt_region(minimal) == "region = 1\n"  # the region is never cut

    def present(prompt: str, tag: str) -> bool:
        return re.search(rf"(?m)(^|[+: >]){tag}$", prompt) is not None

    seen_dropped = 0
    for budget in range(len(full), len(minimal) - 1, -1):
        prompt = render_prompt(ex, max_chars=budget)
        assert len(prompt) <= budget or prompt == minimal
        assert excerpt_region(prompt) == "region = 1\n"
        flags = [present(prompt, tag) for tag, _ in pieces]
        dropped = flags.index(True) if True in flags else len(flags)
        # everything before the first kept piece is dropped, everything after kept
        assert all(flags[dropped:]), (budget, flags)
        assert dropped >= seen_dropped  # a smaller budget never brings a piece back
        seen_dropped = dropped
    assert seen_dropped == len(pieces)


def test_truncation_drops_only_what_is_needed() -> None:
    ex, _ = _truncation_example()
    full = render_prompt(ex, max_chars=None)
    cut = render_prompt(ex, max_chars=len(full) - 1)
    # the oldest edit step is the only thing that went
    assert "hist0" not in cut and "hist1" in cut
    assert len(full) - len(cut) == len("--- a/h.py\n+++ b/h.py\n@@\n+hist0\n")


# --------------------------------------------------------------------------- parsing


def test_parse_output_basic() -> None:
    assert parse_output("y = 2\n" + EDITABLE_REGION_END) == "y = 2\n"
    assert parse_output(EDITABLE_REGION_END) == ""
    # trailing text after the end marker is ignored
    assert parse_output("a" + EDITABLE_REGION_END + "junk" + EDITABLE_REGION_START + ENDOFTEXT) == "a"
    # stray cursor markers carry no text
    assert parse_output("a" + USER_CURSOR + "b" + USER_CURSOR + EDITABLE_REGION_END) == "ab"


def test_parse_unterminated() -> None:
    with pytest.raises(UnterminatedOutput) as err:
        parse_output("y = 2\n")
    assert err.value.reason == "unterminated"
    assert isinstance(err.value, OutputParseError)
    with pytest.raises(UnterminatedOutput):
        parse_output("")
    assert parse_output("y = 2\n", allow_unterminated=True) == "y = 2\n"
    assert parse_output("y" + USER_CURSOR, allow_unterminated=True) == "y"


@pytest.mark.parametrize("marker", STRUCTURAL_MARKERS)
def test_parse_crosses_region_boundary(marker: str) -> None:
    for text in (f"a{marker}b{EDITABLE_REGION_END}", f"a{marker}b"):
        with pytest.raises(CrossesRegionBoundary) as err:
            parse_output(text, allow_unterminated=True)
        assert err.value.reason == "crosses_region_boundary"
        assert err.value.marker == marker


def test_parse_premature_end_of_text() -> None:
    for allow in (False, True):
        with pytest.raises(PrematureEndOfText) as err:
            parse_output("a" + ENDOFTEXT + "b" + EDITABLE_REGION_END, allow_unterminated=allow)
        assert err.value.reason == "premature_end_of_text"
        with pytest.raises(PrematureEndOfText):
            parse_output("a" + ENDOFTEXT, allow_unterminated=allow)
    # the first offending marker decides the reason
    with pytest.raises(CrossesRegionBoundary):
        parse_output(EXCERPT + ENDOFTEXT)


def test_parse_errors_share_a_base_with_reason_codes() -> None:
    reasons = {cls.reason for cls in (UnterminatedOutput, CrossesRegionBoundary, PrematureEndOfText)}
    assert reasons == {"unterminated", "crosses_region_boundary", "premature_end_of_text"}
    assert all(issubclass(c, ValueError) for c in (OutputParseError, UnrenderableExample))


def test_insertion_form_at_the_cursor() -> None:
    ex = make("    x = 1\n    return x\n", "    x = 1\n    y = x + 1\n    return x\n", 10)
    assert inserted_at_cursor(ex) == "    y = x + 1\n"
    assert render_target(ex) == USER_CURSOR + "    y = x + 1\n" + EDITABLE_REGION_END
    assert parse_output(render_target(ex), example=ex) == ex.settled_text
    # a sample in the insertion form goes in at the cursor; stray cursor markers carry no text
    assert parse_output(USER_CURSOR + "    z" + USER_CURSOR + "\n" + EDITABLE_REGION_END, example=ex) == (
        "    x = 1\n    z\n    return x\n"
    )
    # an empty insertion is the region unchanged
    assert parse_output(USER_CURSOR + EDITABLE_REGION_END, example=ex) == ex.original_text
    # the insertion form cannot be parsed without its example
    with pytest.raises(ValueError, match="needs its example"):
        parse_output(USER_CURSOR + "y" + EDITABLE_REGION_END)
    # structural markers and early end of text are refused in the insertion form too
    with pytest.raises(CrossesRegionBoundary):
        parse_output(USER_CURSOR + EXCERPT + EDITABLE_REGION_END, example=ex)
    with pytest.raises(UnterminatedOutput):
        parse_output(USER_CURSOR + "y", example=ex)


def test_whole_region_form_for_other_edits() -> None:
    deleted = make("a\nb\n", "a\n", 2)
    assert inserted_at_cursor(deleted) is None
    assert render_target(deleted) == "a\n" + EDITABLE_REGION_END
    away = make("a = 1\nb = 2\n", "a = 10\nb = 2\n", 11)  # edit before the cursor
    assert inserted_at_cursor(away) is None
    assert parse_output(render_target(away), example=away) == "a = 10\nb = 2\n"
    assert parse_output(render_target(away)) == "a = 10\nb = 2\n"  # whole region: no example needed
