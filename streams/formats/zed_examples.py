"""Zed's edit-prediction example files, in and out (pure: no Kafka, no model).

Zed's ``edit_prediction_cli`` reads an example ("example spec") as Markdown or
JSON/JSONL. Written from reading its format (``ExampleSpec::to_markdown`` /
``from_markdown`` / ``cursor_excerpt`` in the zed repository), not its code:

Markdown::

    +++
    repository_url = "https://github.com/pallets/flask"
    revision = "2fec0b2..."
    +++

    # example-name

    ## Edit History

    ```diff
    --- a/src/app.py
    +++ b/src/app.py
    @@ -10,7 +10,7 @@
    ...
    ```

    ## Cursor Position

    ```src/app.py
    ...the line with the cursor
    #     ^[CURSOR_POSITION]
    ...
    ```

    ## Expected Patch

    ```diff
    ...one or more acceptable patches, one fenced block each
    ```

The cursor is marked on the line *below* the cursor line, by a comment line
holding ``^[CURSOR_POSITION]`` (the caret's column is the cursor's byte column)
or ``<[CURSOR_POSITION]`` (the cursor is at that line's first non-blank), or
inline by ``<|user_cursor|>``. JSON carries the same fields (``name``,
``repository_url``, ``revision``, ``tags``, ``reasoning``, ``uncommitted_diff``,
``cursor_path``, ``cursor_position``, ``edit_history``, ``expected_patches``,
``rejected_patch``); other fields of Zed's ``Example`` ride along untouched.

Mapping to settle: the cursor excerpt becomes the prompt excerpt; the lines the
first expected patch rewrites (widened to the cursor's line) become the region;
the patch applied to them is the settled text; the edit-history hunks become
the edit steps. Export runs the other way from a settled or kept example, with
the region's change as the expected patch.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

import msgspec

from settle.schemas.codecs import classify
from settle.schemas.events import EditStep, Excerpt, PromptContext
from settle.schemas.examples import SettledExample

CURSOR_POSITION_MARKER = "[CURSOR_POSITION]"
INLINE_CURSOR_MARKER = "<|user_cursor|>"
_HEADINGS = {
    "reasoning": "reasoning",
    "uncommitted diff": "uncommitted_diff",
    "edit history": "edit_history",
    "cursor position": "cursor_position",
    "expected patch": "expected_patch",
    "rejected patch": "rejected_patch",
}
_SPEC_FIELDS = ("name", "repository_url", "revision", "tags", "reasoning", "uncommitted_diff", "cursor_path",
                "cursor_position", "edit_history", "expected_patches", "rejected_patch")
_FENCE = re.compile(r"^(`{3,}|~{3,})(.*)$")
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
#: Zed's expected patches may annotate the new side with "#   ^[CURSOR]" / "#  ---^[SELECTION]" lines
_ANNOTATION = re.compile(r"^#.*\^\[[A-Z_]+\]\s*$")


class ZedFormatError(ValueError):
    """A file that is not a Zed example, or one settle cannot turn into a settled example."""


@dataclass
class ZedExample:
    """Zed's ExampleSpec (the fields its Markdown and JSON share)."""

    name: str = ""
    repository_url: str = ""
    revision: str = ""
    tags: list[str] = field(default_factory=list)
    reasoning: str | None = None
    uncommitted_diff: str = ""
    cursor_path: str = ""
    cursor_position: str = ""
    edit_history: str = ""
    expected_patches: list[str] = field(default_factory=list)
    rejected_patch: str | None = None
    #: other JSON fields of Zed's Example (prompt inputs, predictions, scores): kept as they came
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------- Markdown


def _toml_str(s: str) -> str:
    return msgspec.json.encode(s).decode()  # a JSON string is a valid TOML basic string


def to_markdown(ex: ZedExample) -> str:
    """Zed's Markdown layout for one example (front matter, name, sections, fenced blocks)."""
    out = ["+++\n", f"repository_url = {_toml_str(ex.repository_url)}\n", f"revision = {_toml_str(ex.revision)}\n"]
    if ex.tags:
        out.append("tags = [" + ", ".join(_toml_str(t) for t in ex.tags) + "]\n")
    out.append("+++\n\n")
    out.append(f"# {ex.name}\n\n")

    def block(info: str, body: str) -> str:
        fence = "```"
        while fence in body:
            fence += "`"
        return f"{fence}{info}\n{body}{'' if body.endswith(chr(10)) or not body else chr(10)}{fence}\n\n"

    if ex.reasoning is not None:
        out.append("## Reasoning\n\n" + ex.reasoning + ("" if ex.reasoning.endswith("\n") else "\n") + "\n")
    if ex.uncommitted_diff:
        out.append("## Uncommitted Diff\n\n" + block("diff", ex.uncommitted_diff))
    out.append("## Edit History\n\n")
    out.append(block("diff", ex.edit_history) if ex.edit_history else "(No edit history)\n\n")
    out.append("## Cursor Position\n\n" + block(ex.cursor_path, ex.cursor_position))
    out.append("## Expected Patch\n\n")
    out.extend(block("diff", p) for p in ex.expected_patches)
    if ex.rejected_patch is not None:
        out.append("## Rejected Patch\n\n" + block("diff", ex.rejected_patch))
    return "".join(out)


def parse_markdown(text: str) -> ZedExample:
    """Read Zed's Markdown example; raises ZedFormatError without a cursor position block."""
    ex = ZedExample()
    text = text.replace("\r\n", "\n")
    if text.startswith("+++\n") and "+++\n" in text[4:]:
        front, text = text[4:].split("+++\n", 1)
        try:
            data = tomllib.loads(front)
        except tomllib.TOMLDecodeError as exc:
            raise ZedFormatError(f"front matter is not TOML: {exc}") from None
        ex.repository_url = str(data.get("repository_url", ""))
        ex.revision = str(data.get("revision", ""))
        ex.tags = [str(t) for t in data.get("tags", [])]
        text = text.lstrip()
    section: str | None = None
    prose: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            marker, info = fence.group(1), fence.group(2).strip()
            body: list[str] = []
            i += 1
            while i < len(lines) and not (lines[i].startswith(marker[0] * len(marker))
                                          and not lines[i].strip(marker[0]).strip()):
                body.append(lines[i])
                i += 1
            i += 1  # the closing fence
            content = "".join(b + "\n" for b in body)
            if section == "uncommitted_diff":
                ex.uncommitted_diff = content
            elif section == "edit_history":
                ex.edit_history += content
            elif section == "cursor_position":
                ex.cursor_path, ex.cursor_position = info, content
            elif section == "expected_patch":
                ex.expected_patches.append(content)
            elif section == "rejected_patch":
                ex.rejected_patch = content
            continue
        if line.startswith("# "):
            ex.name = line[2:].strip()
        elif line.startswith("## "):
            if section == "reasoning":
                ex.reasoning = "\n".join(prose).strip("\n") + "\n"
            section = _HEADINGS.get(line[3:].strip().lower(), "other")
            prose = []
        elif section == "reasoning":
            prose.append(line)
        i += 1
    if section == "reasoning":
        ex.reasoning = "\n".join(prose).strip("\n") + "\n"
    if not ex.cursor_path or not ex.cursor_position:
        raise ZedFormatError("missing the cursor position code block")
    return ex


# --------------------------------------------------------------------- JSON


def to_json(ex: ZedExample) -> bytes:
    """One JSON object as Zed serialises an ExampleSpec (empty optional fields left out)."""
    obj: dict[str, Any] = {"name": ex.name, "repository_url": ex.repository_url, "revision": ex.revision}
    if ex.tags:
        obj["tags"] = ex.tags
    if ex.reasoning is not None:
        obj["reasoning"] = ex.reasoning
    obj.update(uncommitted_diff=ex.uncommitted_diff, cursor_path=ex.cursor_path,
               cursor_position=ex.cursor_position, edit_history=ex.edit_history,
               expected_patches=ex.expected_patches)
    if ex.rejected_patch is not None:
        obj["rejected_patch"] = ex.rejected_patch
    obj.update(ex.extra)
    return msgspec.json.encode(obj)


def parse_json(raw: bytes | str) -> ZedExample:
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:  # the shared classifier's reason: byte_order_mark, invalid_utf8, ...
        found = classify(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw, "json", exc,
                         invalid="malformed")
        raise ZedFormatError(f"not JSON: {found}") from None
    if not isinstance(obj, dict):
        raise ZedFormatError("a Zed example is a JSON object")
    for key in ("cursor_path", "cursor_position"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            raise ZedFormatError(f"missing {key}")
    patches = obj.get("expected_patches", [])
    if not isinstance(patches, list) or not all(isinstance(p, str) for p in patches):
        raise ZedFormatError("expected_patches must be a list of strings")
    return ZedExample(
        name=str(obj.get("name") or ""), repository_url=str(obj.get("repository_url") or ""),
        revision=str(obj.get("revision") or ""), tags=[str(t) for t in obj.get("tags") or []],
        reasoning=obj.get("reasoning"), uncommitted_diff=str(obj.get("uncommitted_diff") or ""),
        cursor_path=obj["cursor_path"], cursor_position=obj["cursor_position"],
        edit_history=str(obj.get("edit_history") or ""), expected_patches=list(patches),
        rejected_patch=obj.get("rejected_patch"),
        extra={k: v for k, v in obj.items() if k not in _SPEC_FIELDS},
    )


# ------------------------------------------------------------------- cursor


def cursor_excerpt(cursor_position: str) -> tuple[str, int]:
    """(excerpt without the marker, cursor as a UTF-8 byte offset), as Zed reads the Cursor Position block."""
    at = cursor_position.find(INLINE_CURSOR_MARKER)
    if at >= 0:
        excerpt = cursor_position[:at] + cursor_position[at + len(INLINE_CURSOR_MARKER):]
        return excerpt, len(cursor_position[:at].encode())
    data = cursor_position.encode()
    marker = data.find(CURSOR_POSITION_MARKER.encode())
    if marker < 0:
        raise ZedFormatError("missing [CURSOR_POSITION] marker")
    line_start = data.rfind(b"\n", 0, marker) + 1
    nl = data.find(b"\n", line_start)
    line_end = len(data) if nl < 0 else nl + 1
    line = data[line_start:line_end].rstrip(b"\n")
    caret = line.find(b"^")
    if caret >= 0:
        column = caret
    elif b"<" in line:
        column = len(line) - len(line.lstrip())
    else:
        raise ZedFormatError("the marker line needs '^' or '<' before [CURSOR_POSITION]")
    excerpt = data[:line_start] + data[line_end:]
    excerpt = excerpt[: len(excerpt.rstrip(b"\n"))]
    cursor_line_end = max(line_start - 1, 0)
    cursor_line_start = excerpt.rfind(b"\n", 0, cursor_line_end) + 1
    return excerpt.decode(), cursor_line_start + column


def set_cursor_excerpt(excerpt: str, cursor_byte: int, comment: str) -> str:
    """The Cursor Position block for ``excerpt`` with the cursor at a UTF-8 byte offset (Zed's layout)."""
    data = excerpt.encode()
    line_start = data.rfind(b"\n", 0, cursor_byte) + 1
    nl = data.find(b"\n", line_start)
    line_end = len(data) if nl < 0 else nl + 1
    line = data[line_start:line_end]
    indent = line[: len(line) - len(line.lstrip())]
    indent = indent[: len(indent.rstrip(b"\n"))] if indent.strip(b" \t") else indent.rstrip(b"\n")
    column = cursor_byte - line_start
    c = comment.encode()
    if column < len(c):
        marker = b" " * column + c + b" <" + CURSOR_POSITION_MARKER.encode()
    else:
        marker = indent if column >= len(indent) + len(c) else b""
        marker += c
        marker += b" " * max(0, column - len(marker))
        marker += b"^" + CURSOR_POSITION_MARKER.encode()
    out = data[:line_end]
    if not out.endswith(b"\n"):
        out += b"\n"
    out += marker
    if line_end < len(data):
        out += b"\n" + data[line_end:]
    return out.decode()


_COMMENTS = {".py": "#", ".rb": "#", ".sh": "#", ".toml": "#", ".yaml": "#", ".yml": "#", ".r": "#",
             ".lua": "--", ".sql": "--", ".hs": "--"}


def comment_prefix(path: str) -> str:
    """Line-comment prefix for the marker line, by file extension (``//`` unless known otherwise)."""
    dot = path.rfind(".")
    return _COMMENTS.get(path[dot:].lower(), "//") if dot >= 0 else "#"


# -------------------------------------------------------------------- diffs


@dataclass
class Hunk:
    path: str
    old_start: int
    #: (tag, text) with tag in " ", "-", "+"; text without its newline
    lines: list[tuple[str, str]]

    @property
    def old(self) -> list[str]:
        return [t for tag, t in self.lines if tag != "+"]

    @property
    def new(self) -> list[str]:
        return [t for tag, t in self.lines if tag != "-"]


def parse_diff(diff: str) -> list[Hunk]:
    """Hunks of a unified diff (several files allowed); Zed's caret annotation lines are skipped.

    Hunk header counts are not trusted (hand-written examples get them wrong);
    a hunk runs to the next ``@@`` or file header. A bare empty line is an empty
    context line, as in Zed's own examples.
    """
    hunks: list[Hunk] = []
    path = ""
    current: Hunk | None = None
    lines = diff.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    for i, line in enumerate(lines):
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            current = None
            continue
        if line.startswith("+++ ") and current is None:
            target = line[4:].strip()
            path = target[2:] if target.startswith(("b/", "a/")) else target
            continue
        m = _HUNK.match(line)
        if m:
            current = Hunk(path, int(m.group(1)), [])
            hunks.append(current)
            continue
        if current is None or _ANNOTATION.match(line) or line.startswith("\\"):
            continue
        tag, text = (" ", "") if line == "" else (line[0], line[1:])
        if tag in " +-":
            current.lines.append((tag, text))
    return hunks


def _next_is_header(line: str) -> bool:
    return line.startswith("--- a/") or line.startswith("--- /dev/null")


def unified_diff(path: str, old: str, new: str, old_start_line: int = 1, context: int = 3) -> str:
    """A git-style diff of one change (line numbers start at ``old_start_line``)."""
    a, b = old.split("\n"), new.split("\n")
    out: list[str] = []
    for line in difflib.unified_diff(a, b, f"a/{path}", f"b/{path}", lineterm="", n=context):
        m = _HUNK.match(line)
        if m:
            o, oc, n_, nc = m.group(1), m.group(2), m.group(3), m.group(4)
            line = (f"@@ -{int(o) + old_start_line - 1}{',' + oc if oc is not None else ''} "
                    f"+{int(n_) + old_start_line - 1}{',' + nc if nc is not None else ''} @@")
        out.append(line)
    return "\n".join(out) + "\n" if out else ""


# ------------------------------------------------------------- import/export


def _find_block(lines: list[str], block: list[str], from_line: int) -> int | None:
    if not block:
        return None
    for i in range(from_line, len(lines) - len(block) + 1):
        if lines[i : i + len(block)] == block:
            return i
    return None


def to_settled(ex: ZedExample, patch_index: int = 0) -> SettledExample:
    """A settled candidate from a Zed example: region = lines the expected patch rewrites (+ the cursor's line)."""
    excerpt, cursor_byte = cursor_excerpt(ex.cursor_position)
    if not ex.expected_patches:
        raise ZedFormatError("no expected patch: nothing to settle to")
    hunks = [h for h in parse_diff(ex.expected_patches[patch_index]) if not h.path or h.path == ex.cursor_path]
    if not hunks:
        raise ZedFormatError("the expected patch has no hunk for the cursor's file")
    lines = excerpt.split("\n")
    cursor_cp = len(excerpt.encode()[:cursor_byte].decode(errors="ignore"))
    cursor_line = excerpt[:cursor_cp].count("\n")
    placed: list[tuple[int, Hunk]] = []
    at = 0
    for h in hunks:
        pos = _find_block(lines, h.old, at)
        if pos is None:
            raise ZedFormatError(f"expected patch hunk @@ -{h.old_start} does not match the cursor excerpt")
        placed.append((pos, h))
        at = pos + len(h.old)
    first = min(placed[0][0], cursor_line)
    last = max(placed[-1][0] + len(placed[-1][1].old), cursor_line + 1)
    new_lines: list[str] = []
    i = first
    for pos, h in placed:
        new_lines.extend(lines[i:pos])
        new_lines.extend(h.new)
        i = pos + len(h.old)
    new_lines.extend(lines[i:last])
    trailing = "\n" if last < len(lines) else ""
    original = "\n".join(lines[first:last]) + trailing
    settled = "\n".join(new_lines) + trailing
    region_start = sum(len(line) + 1 for line in lines[:first])
    steps = [EditStep(path=h.path or ex.cursor_path, old_text="\n".join(h.old) + "\n", new_text="\n".join(h.new) + "\n")
             for h in parse_diff(ex.edit_history)]
    ident = f"{ex.repository_url}\x1f{ex.revision}\x1f{ex.cursor_path}\x1f{ex.name}\x1f{ex.cursor_position}"
    return SettledExample(
        id="zed-" + hashlib.blake2b(ident.encode(), digest_size=8).hexdigest(),
        request_id=ex.name or "zed-example",
        session_id=f"zed:{ex.repository_url}@{ex.revision}",
        path=ex.cursor_path,
        encoding="utf-32",
        requested_at_ms=0,
        settled_at_ms=0,
        original_text=original,
        settled_text=settled,
        cursor=cursor_cp - region_start,
        context=PromptContext(edit_history=steps, excerpt=Excerpt(path=ex.cursor_path, text=excerpt)),
    )


def from_settled(example: SettledExample, *, repository_url: str = "", revision: str = "",
                 tags: list[str] | None = None, name: str | None = None) -> ZedExample:
    """A Zed example from a settled (or kept) example: the region's change is the expected patch."""
    path = example.path.lstrip("/")
    if example.session_id.startswith("zed:") and "@" in example.session_id:
        # imported from Zed: give it back its own name, repository and revision
        repo, _, rev = example.session_id[4:].rpartition("@")
        repository_url, revision = repository_url or repo, revision or rev
        name = name or example.request_id
    region = example.original_text
    excerpt_text = region
    at = 0
    first_line = 1
    if example.context.excerpt is not None:
        found = _locate(example.context.excerpt.text, region)
        if found is not None:
            excerpt_text, at = example.context.excerpt.text, found
            first_line = example.context.excerpt.start_line + 1
    cursor_cp = at + example.cursor
    cursor_byte = len(excerpt_text[:cursor_cp].encode())
    new_excerpt = excerpt_text[:at] + example.settled_text + excerpt_text[at + len(region):]
    patch = unified_diff(path, excerpt_text, new_excerpt, first_line)
    history = "".join(unified_diff(s.path.lstrip("/"), s.old_text.removesuffix("\n"), s.new_text.removesuffix("\n"))
                      for s in example.context.edit_history if s.old_text != s.new_text)
    return ZedExample(
        name=name or example.id,
        repository_url=repository_url,
        revision=revision,
        tags=list(tags or []),
        cursor_path=path,
        cursor_position=set_cursor_excerpt(excerpt_text, cursor_byte, comment_prefix(path)),
        edit_history=history,
        expected_patches=[patch] if patch else [],
    )


def _locate(text: str, region: str) -> int | None:
    from settle.streams.contracts.prompt import _locate_region

    return _locate_region(text, region)
