"""The one prompt format shared by the scorer and the trainer (Zeta-style).

Scoring samples a student on exactly the prompt it will later be trained on, so
both sides must render through this module; any drift between them would make
the band measure a different task from the one the student learns.

Layout (every section marker is always present, so the model sees one fixed
structure whatever is empty)::

    <|edit_history|>
    --- a/src/lib.rs
    +++ b/src/lib.rs
    @@
    -old line
    +new line
    <|excerpt|>
    File: src/lib.rs
    text before<|editable_region_start|>reg<|user_cursor_is_here|>ion<|editable_region_end|>text after
    <|related|>
    File: src/other.rs
    related text
    <|diagnostics|>
    error: message
    <|output|>
    <|editable_region_start|>

The continuation the model must produce (:func:`render_target`) comes in two
forms, chosen by its first token, both ended by ``<|editable_region_end|>``;
``prompt + target`` is the training text:

* **insertion at the cursor** (``<|user_cursor_is_here|>`` first): when the
  settled text is the region with text inserted at the cursor and nothing else
  changed (``original[:cursor] + X + original[cursor:]``, what typing produces),
  the target is ``<|user_cursor_is_here|>X<|editable_region_end|>``: only the
  new text, like Zed's formats that emit less than the whole region. A small
  student then need not copy the region back, where one wrong character costs
  as much as one wrong prediction.
* **whole region** (anything else first): the settled region text, for every
  other edit (deletions, rewrites, edits away from the cursor).

:func:`parse_output` turns either back into region text; the insertion form
needs the example (its region and cursor), which every consumer has. Region markers sit exactly around the region text (no added
newlines) because regions are arbitrary spans, not whole lines, and the text
between them must be the region byte for byte.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import ClassVar, Final, Literal

from settle.schemas.events import Diagnostic, EditStep, Excerpt
from settle.schemas.examples import SettledExample
from settle.schemas.scored import DEFAULT_MAX_CHARS

ENDOFTEXT: Final = "<|endoftext|>"
EDITABLE_REGION_START: Final = "<|editable_region_start|>"
EDITABLE_REGION_END: Final = "<|editable_region_end|>"
USER_CURSOR: Final = "<|user_cursor_is_here|>"
EDIT_HISTORY: Final = "<|edit_history|>"
EXCERPT: Final = "<|excerpt|>"
RELATED: Final = "<|related|>"
DIAGNOSTICS: Final = "<|diagnostics|>"
OUTPUT: Final = "<|output|>"

#: Every special token; the tokenizer keeps each as a single token.
SPECIAL_TOKENS: Final[tuple[str, ...]] = (
    ENDOFTEXT,
    EDITABLE_REGION_START,
    EDITABLE_REGION_END,
    USER_CURSOR,
    EDIT_HISTORY,
    EXCERPT,
    RELATED,
    DIAGNOSTICS,
    OUTPUT,
)

#: Markers that delimit prompt structure; one inside the output region means the
#: model ran past the region it was asked to rewrite.
STRUCTURAL_MARKERS: Final[tuple[str, ...]] = (
    EDITABLE_REGION_START,
    EDIT_HISTORY,
    EXCERPT,
    RELATED,
    DIAGNOSTICS,
    OUTPUT,
)

_SPECIAL_RE: Final = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
_LINE_RE: Final = re.compile(r"[^\n]*\n|[^\n]+")


# --------------------------------------------------------------------------- errors


class UnrenderableExample(ValueError):
    """The example cannot be rendered faithfully; the scorer records it as ``invalid``."""

    reason: Literal["special_token_in_region", "cursor_out_of_range"]

    def __init__(
        self, reason: Literal["special_token_in_region", "cursor_out_of_range"], detail: str
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


ParseErrorReason = Literal["unterminated", "crosses_region_boundary", "premature_end_of_text"]


class OutputParseError(ValueError):
    """Model output that is not a well-formed region; ``reason`` is a stable code for metrics."""

    reason: ClassVar[ParseErrorReason]


class UnterminatedOutput(OutputParseError):
    """No ``<|editable_region_end|>``: the region was never closed, so its end is unknown."""

    reason = "unterminated"


class CrossesRegionBoundary(OutputParseError):
    """A structural marker inside the region: the model wandered out of the region it rewrites."""

    reason = "crosses_region_boundary"

    def __init__(self, marker: str) -> None:
        super().__init__(f"output contains {marker} before {EDITABLE_REGION_END}")
        self.marker = marker


class PrematureEndOfText(OutputParseError):
    """``<|endoftext|>`` before the region closed: the model stopped mid-region."""

    reason = "premature_end_of_text"


# --------------------------------------------------------------------------- helpers


def special_tokens_in(text: str) -> list[str]:
    """Special token strings occurring in ``text``, in order of first occurrence."""
    seen: dict[str, None] = {}
    for m in _SPECIAL_RE.finditer(text):
        seen.setdefault(m.group(0), None)
    return list(seen)


def _defuse(text: str) -> str:
    """Break special-token strings in *context* text so the tokenizer cannot match them.

    Source code can legitimately contain these strings (this module does); left
    intact they would become structural tokens inside the prompt. Context is
    shown to the model, not compared with anything, so a lossy but deterministic
    rewrite (``<|x|>`` -> ``< |x|>``) is safe there. Region text is never
    rewritten: see :func:`check_renderable`.
    """
    if "<|" not in text:
        return text
    return _SPECIAL_RE.sub(lambda m: "< " + m.group(0)[1:], text)


def _ensure_nl(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def _lines(text: str) -> list[str]:
    """Split on ``\\n`` only, keeping terminators (``str.splitlines`` also splits on \\r, \\f, ...)."""
    return _LINE_RE.findall(text)


def _lines_no_ends(text: str) -> list[str]:
    return [line.removesuffix("\n") for line in _lines(text)]


def check_renderable(example: SettledExample) -> None:
    """Raise :class:`UnrenderableExample` unless the region can be rendered exactly.

    Region and settled text are what distances are measured on and what the
    model is trained to emit, so they cannot be defused like context: a special
    token inside them would either end the target early or be unlearnable.
    """
    if not 0 <= example.cursor <= len(example.original_text):
        raise UnrenderableExample(
            "cursor_out_of_range",
            f"cursor {example.cursor} outside region of {len(example.original_text)} code points",
        )
    for name, text in (("original_text", example.original_text), ("settled_text", example.settled_text)):
        found = special_tokens_in(text)
        if found:
            raise UnrenderableExample("special_token_in_region", f"{name} contains {found[0]}")


def _render_edit_step(step: EditStep) -> str:
    """One edit as a unified diff without line numbers (they are relative to a snippet, so noise)."""
    old = _lines_no_ends(step.old_text)
    new = _lines_no_ends(step.new_text)
    if old == new:
        return ""
    path = _defuse(step.path)
    out: list[str] = []
    for line in difflib.unified_diff(old, new, f"a/{path}", f"b/{path}", lineterm="", n=3):
        if line.startswith("@@"):
            out.append("@@")
        elif line.startswith(("---", "+++")) and len(out) < 2:
            out.append(line)
        else:
            out.append(line[0] + _defuse(line[1:]))
    return "\n".join(out) + "\n"


def _render_excerpt_block(excerpt: Excerpt) -> str:
    return f"File: {_defuse(excerpt.path)}\n" + _ensure_nl(_defuse(excerpt.text))


def _render_diagnostic(diag: Diagnostic) -> str:
    # Spans are buffer offsets the prompt gives no frame for, so they are left out.
    return _ensure_nl(f"{diag.severity}: {_defuse(diag.message)}")


def _locate_region(excerpt_text: str, region: str) -> int | None:
    """Start of ``region`` in the excerpt, or None when it cannot be placed.

    The example carries no offset of the region inside the excerpt, so it is
    found by text. With several occurrences the one nearest the excerpt's middle
    wins (editors centre excerpts on the cursor); ties go to the earlier one. An
    empty region matches everywhere and so is never placed.
    """
    if not region:
        return None
    centre2 = len(excerpt_text)  # twice the centre, to stay in integers
    best: int | None = None
    best_key = 0
    i = excerpt_text.find(region)
    while i != -1:
        key = abs(2 * i + len(region) - centre2)
        if best is None or key < best_key:
            best, best_key = i, key
        i = excerpt_text.find(region, i + 1)
    return best


@dataclass(slots=True)
class _ExcerptSection:
    """The excerpt split around the region, so lines can be trimmed from the far ends."""

    header: str
    prefix: list[str]
    block: str
    suffix: list[str]
    pi: int = field(init=False)  # prefix[pi:] is kept
    sj: int = field(init=False)  # suffix[:sj] is kept
    _prefix_len: int = field(init=False)
    _suffix_len: int = field(init=False)

    def __post_init__(self) -> None:
        self.pi = 0
        self.sj = len(self.suffix)
        self._prefix_len = sum(map(len, self.prefix))
        self._suffix_len = sum(map(len, self.suffix))

    def size(self) -> int:
        ends_nl = self.sj > 0 and self.suffix[self.sj - 1].endswith("\n")
        return len(self.header) + self._prefix_len + len(self.block) + self._suffix_len + (0 if ends_nl else 1)

    def can_trim(self) -> bool:
        return self.pi < len(self.prefix) or self.sj > 0

    def trim_one(self) -> None:
        """Drop the kept line farthest from the region; on a tie, text after the region goes first."""
        dist_p = len(self.prefix) - 1 - self.pi if self.pi < len(self.prefix) else -1
        dist_s = self.sj - 1 if self.sj > 0 else -1
        if dist_s >= dist_p:
            self.sj -= 1
            self._suffix_len -= len(self.suffix[self.sj])
        else:
            self._prefix_len -= len(self.prefix[self.pi])
            self.pi += 1

    def render(self) -> str:
        body = "".join(self.prefix[self.pi :]) + self.block + "".join(self.suffix[: self.sj])
        return self.header + _ensure_nl(body)


def _excerpt_section(example: SettledExample) -> _ExcerptSection:
    region = example.original_text
    block = (
        EDITABLE_REGION_START
        + region[: example.cursor]
        + USER_CURSOR
        + region[example.cursor :]
        + EDITABLE_REGION_END
    )
    excerpt = example.context.excerpt
    at = None if excerpt is None else _locate_region(excerpt.text, region)
    if excerpt is None or at is None:
        # No excerpt, or one that does not contain the region (captured at a
        # different moment, truncated by the editor, or an empty region that
        # cannot be placed). Putting the markers anywhere in it would be a guess
        # and would show the model surrounding text that contradicts the region,
        # so the region is rendered alone: always correct, just less context.
        return _ExcerptSection(f"File: {_defuse(example.path)}\n", [], block, [])
    return _ExcerptSection(
        f"File: {_defuse(excerpt.path)}\n",
        _lines(_defuse(excerpt.text[:at])),
        block,
        _lines(_defuse(excerpt.text[at + len(region) :])),
    )


# --------------------------------------------------------------------------- API


def render_prompt(example: SettledExample, *, max_chars: int | None = DEFAULT_MAX_CHARS) -> str:
    """Render the prompt whose continuation is the new region (see the module docstring).

    When longer than ``max_chars``: drop edit history oldest first (the list is
    taken as chronological), then related excerpts last first (taken as ranked
    by relevance), then excerpt lines farthest from the region, then diagnostics
    last first. The region is never cut, so the result exceeds ``max_chars``
    only when the region and fixed markup alone do; ``max_chars=None`` never
    truncates. Raises :class:`UnrenderableExample`. Deterministic.
    """
    check_renderable(example)
    ctx = example.context
    history = [s for s in map(_render_edit_step, ctx.edit_history) if s]
    related = [_render_excerpt_block(e) for e in ctx.related]
    diagnostics = [_render_diagnostic(d) for d in ctx.diagnostics]
    excerpt = _excerpt_section(example)

    fixed = sum(len(m) + 1 for m in (EDIT_HISTORY, EXCERPT, RELATED, DIAGNOSTICS, OUTPUT)) + len(
        EDITABLE_REGION_START
    )
    if max_chars is not None:
        h0 = 0
        r_end = len(related)
        d_end = len(diagnostics)
        h_len = sum(map(len, history))
        r_len = sum(map(len, related))
        d_len = sum(map(len, diagnostics))

        def total() -> int:
            return fixed + h_len + excerpt.size() + r_len + d_len

        while total() > max_chars and h0 < len(history):
            h_len -= len(history[h0])
            h0 += 1
        while total() > max_chars and r_end > 0:
            r_end -= 1
            r_len -= len(related[r_end])
        while total() > max_chars and excerpt.can_trim():
            excerpt.trim_one()
        while total() > max_chars and d_end > 0:
            d_end -= 1
            d_len -= len(diagnostics[d_end])
        history, related, diagnostics = history[h0:], related[:r_end], diagnostics[:d_end]

    return "".join(
        [
            EDIT_HISTORY + "\n",
            *history,
            EXCERPT + "\n",
            excerpt.render(),
            RELATED + "\n",
            *related,
            DIAGNOSTICS + "\n",
            *diagnostics,
            OUTPUT + "\n",
            EDITABLE_REGION_START,
        ]
    )


def inserted_at_cursor(example: SettledExample) -> str | None:
    """``X`` when the settled text is the region with ``X`` inserted at the cursor, else None."""
    original, settled, c = example.original_text, example.settled_text, example.cursor
    if len(settled) < len(original) or not settled.startswith(original[:c]):
        return None
    if not settled.endswith(original[c:]):
        return None
    return settled[c : len(settled) - (len(original) - c)]


def render_target(example: SettledExample) -> str:
    """What the trainer teaches after :func:`render_prompt` (the loss covers only these tokens).

    The insertion form when the edit is an insertion at the cursor, else the whole region
    (module docstring).
    """
    check_renderable(example)
    inserted = inserted_at_cursor(example)
    if inserted is not None:
        return USER_CURSOR + inserted + EDITABLE_REGION_END
    return example.settled_text + EDITABLE_REGION_END


def parse_output(text: str, *, allow_unterminated: bool = False, example: SettledExample | None = None) -> str:
    """Turn a model continuation back into region text.

    Takes everything before ``<|editable_region_end|>`` (anything after it is
    ignored: generation should have stopped there) and removes stray cursor
    markers, which carry no text. ``allow_unterminated`` is for callers that hit
    their token budget: the whole output is then taken as a (possibly cut) region.

    An output that starts with ``<|user_cursor_is_here|>`` is the insertion form:
    the text after it is inserted at ``example``'s cursor into its original
    region (``example`` is then required: ValueError without it).

    Raises :class:`CrossesRegionBoundary` for a structural marker before the end,
    :class:`PrematureEndOfText` for ``<|endoftext|>`` before it, and
    :class:`UnterminatedOutput` when there is no end marker and
    ``allow_unterminated`` is false.
    """
    end = text.find(EDITABLE_REGION_END)
    region = text if end == -1 else text[:end]
    if "<|" in region:
        first: tuple[int, str] | None = None
        for marker in STRUCTURAL_MARKERS:
            i = region.find(marker)
            if i != -1 and (first is None or i < first[0]):
                first = (i, marker)
        eot = region.find(ENDOFTEXT)
        if first is not None and (eot == -1 or first[0] < eot):
            raise CrossesRegionBoundary(first[1])
        if eot != -1:
            raise PrematureEndOfText(f"{ENDOFTEXT} at {eot} before {EDITABLE_REGION_END}")
        region = region.replace(USER_CURSOR, "")
    if end == -1 and not allow_unterminated:
        raise UnterminatedOutput(f"no {EDITABLE_REGION_END} in {len(text)} chars of output")
    if text.startswith(USER_CURSOR):
        if example is None:
            raise ValueError("an insertion-form output needs its example (region and cursor) to parse")
        c = example.cursor
        return example.original_text[:c] + region + example.original_text[c:]
    return region


__all__ = [
    "ENDOFTEXT",
    "EDITABLE_REGION_START",
    "EDITABLE_REGION_END",
    "USER_CURSOR",
    "EDIT_HISTORY",
    "EXCERPT",
    "RELATED",
    "DIAGNOSTICS",
    "OUTPUT",
    "SPECIAL_TOKENS",
    "STRUCTURAL_MARKERS",
    "DEFAULT_MAX_CHARS",
    "UnrenderableExample",
    "ParseErrorReason",
    "OutputParseError",
    "UnterminatedOutput",
    "CrossesRegionBoundary",
    "PrematureEndOfText",
    "special_tokens_in",
    "check_renderable",
    "render_prompt",
    "render_target",
    "inserted_at_cursor",
    "parse_output",
]
