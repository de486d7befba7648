"""Zed's example formats: hand-written Markdown and JSONL examples round-trip, import and export."""

from __future__ import annotations

import msgspec
import pytest

from settle.schemas.events import EditStep, Excerpt, PromptContext
from settle.schemas.examples import SettledExample
from settle.streams.formats.zed_examples import (
    ZedFormatError,
    cursor_excerpt,
    from_settled,
    parse_diff,
    parse_json,
    parse_markdown,
    set_cursor_excerpt,
    to_json,
    to_markdown,
    to_settled,
)

# Hand-written in Zed's layout: front matter with tags, a reasoning paragraph, two
# history diffs, a caret cursor marker, two acceptable patches and a rejected one.
PY_EXAMPLE = '''+++
repository_url = "https://github.com/example/shop"
revision = "0123456789abcdef0123456789abcdef01234567"
tags = ["rename", "python"]
+++

# shop--finish-rename

## Reasoning

The user renamed `qty` to `quantity` in the signature; the body should follow.

## Edit History

```diff
--- a/shop/cart.py
+++ b/shop/cart.py
@@ -10,3 +10,3 @@
 class Cart:
-    def add(self, item, qty):
+    def add(self, item, quantity):
         total = self.total
```

## Cursor Position

```shop/cart.py
class Cart:
    def add(self, item, quantity):
        total = self.total
        total += item.price * qty
        #                     ^[CURSOR_POSITION]
        self.total = total
        return total
```

## Expected Patch

```diff
--- a/shop/cart.py
+++ b/shop/cart.py
@@ -12,3 +12,3 @@
         total = self.total
-        total += item.price * qty
+        total += item.price * quantity
         self.total = total
```

```diff
--- a/shop/cart.py
+++ b/shop/cart.py
@@ -12,3 +12,3 @@
         total = self.total
-        total += item.price * qty
+        total += quantity * item.price
         self.total = total
```

## Rejected Patch

```diff
--- a/shop/cart.py
+++ b/shop/cart.py
@@ -12,3 +12,2 @@
         total = self.total
-        total += item.price * qty
         self.total = total
```

'''

# Rust, the cursor at the start of a line ('<' marker), no edit history, no tags.
RS_EXAMPLE = '''+++
repository_url = "git@github.com:example/engine"
revision = "fedcba9876543210fedcba9876543210fedcba98"
+++

# engine--add-field

## Edit History

(No edit history)

## Cursor Position

```src/config.rs
pub struct Config {
    pub name: String,

// <[CURSOR_POSITION]
}
```

## Expected Patch

```diff
--- a/src/config.rs
+++ b/src/config.rs
@@ -1,4 +1,4 @@
 pub struct Config {
     pub name: String,
-
+    pub verbose: bool,
 }
```

'''

JSONL_LINE = (
    b'{"name":"ui--close-paren","repository_url":"https://github.com/example/ui","revision":"abc123",'
    b'"uncommitted_diff":"","cursor_path":"src/ui.ts","cursor_position":"render(view<|user_cursor|>\\n",'
    b'"edit_history":"","expected_patches":["--- a/src/ui.ts\\n+++ b/src/ui.ts\\n@@ -1,1 +1,1 @@\\n'
    b'-render(view\\n+render(view);\\n"],"predictions":[{"actual_output":"","provider":"zeta2"}]}'
)


@pytest.mark.parametrize("text", [PY_EXAMPLE, RS_EXAMPLE])
def test_markdown_round_trips_byte_for_byte(text: str) -> None:
    ex = parse_markdown(text)
    assert to_markdown(ex) == text
    assert parse_json(to_json(ex)) == ex


def test_markdown_fields() -> None:
    ex = parse_markdown(PY_EXAMPLE)
    assert (ex.name, ex.repository_url, ex.tags) == ("shop--finish-rename", "https://github.com/example/shop",
                                                     ["rename", "python"])
    assert ex.reasoning and "quantity" in ex.reasoning
    assert ex.cursor_path == "shop/cart.py" and len(ex.expected_patches) == 2 and ex.rejected_patch
    assert ex.edit_history.startswith("--- a/shop/cart.py\n")


def test_jsonl_round_trips_and_keeps_zeds_other_fields() -> None:
    ex = parse_json(JSONL_LINE)
    assert ex.extra == {"predictions": [{"actual_output": "", "provider": "zeta2"}]}
    assert to_json(ex) == JSONL_LINE
    assert parse_markdown(to_markdown(ex)).cursor_position == ex.cursor_position


def test_import_makes_the_region_the_patched_lines_and_the_cursor_exact() -> None:
    s = to_settled(parse_markdown(PY_EXAMPLE))
    assert s.original_text == (
        "        total = self.total\n        total += item.price * qty\n        self.total = total\n")
    assert s.settled_text == (
        "        total = self.total\n        total += item.price * quantity\n        self.total = total\n")
    assert s.original_text[: s.cursor].endswith("item.price * ")
    assert s.path == "shop/cart.py" and s.session_id.startswith("zed:https://github.com/example/shop@")
    assert s.context.edit_history == [EditStep(
        path="shop/cart.py",
        old_text="class Cart:\n    def add(self, item, qty):\n        total = self.total\n",
        new_text="class Cart:\n    def add(self, item, quantity):\n        total = self.total\n")]
    assert s.context.excerpt is not None and s.original_text in s.context.excerpt.text
    assert to_settled(parse_markdown(PY_EXAMPLE), 1).settled_text.count("quantity * item.price") == 1

    rs = to_settled(parse_markdown(RS_EXAMPLE))
    assert rs.original_text == "pub struct Config {\n    pub name: String,\n\n}"
    assert rs.settled_text == "pub struct Config {\n    pub name: String,\n    pub verbose: bool,\n}"
    assert rs.original_text[: rs.cursor] == "pub struct Config {\n    pub name: String,\n"

    js = to_settled(parse_json(JSONL_LINE))
    assert (js.original_text, js.settled_text, js.cursor) == ("render(view\n", "render(view);\n", 11)


def test_cursor_markers_both_ways() -> None:
    excerpt = "def f():\n    x = 42\n    return x"
    for offset in (excerpt.index("42"), excerpt.index("x ="), excerpt.index("    x"), len(excerpt),
                   excerpt.index("= 42") + 1, 0):
        block = set_cursor_excerpt(excerpt, offset, "#")
        assert "[CURSOR_POSITION]" in block
        assert cursor_excerpt(block) == (excerpt, offset)
    assert cursor_excerpt("a<|user_cursor|>b\n") == ("ab\n", 1)
    with pytest.raises(ZedFormatError):
        cursor_excerpt("no marker here")


def test_settled_export_then_import_keeps_the_edit_and_the_cursor() -> None:
    excerpt = "import os\n\n\ndef size(path):\n    st = os.stat(path)\n    return st.st_size\n\n\nprint(size('.'))\n"
    region = "    st = os.stat(path)\n    return st.st_size\n"
    example = SettledExample(
        id="abc123", request_id="r1", session_id="s1", path="/home/ana/src/tools/size.py", encoding="utf-16",
        requested_at_ms=1, settled_at_ms=2, original_text=region,
        settled_text="    st = os.stat(path)\n    return st.st_size if st else 0\n", cursor=len("    st = os."),
        context=PromptContext(
            excerpt=Excerpt(path="/home/ana/src/tools/size.py", text=excerpt, start_line=40),
            edit_history=[EditStep(path="/home/ana/src/tools/size.py", old_text="import sys\n", new_text="import os\n")]),
    )
    zed = from_settled(example, repository_url="https://github.com/example/tools", revision="HEAD", tags=["settle"])
    assert zed.cursor_path == "home/ana/src/tools/size.py"
    assert "@@ -43,7 +43,7 @@" in zed.expected_patches[0]  # line numbers from the excerpt's own start line (40)
    md = to_markdown(zed)
    back = to_settled(parse_markdown(md))
    at = excerpt.index(region)
    after = excerpt[:at] + example.settled_text + excerpt[at + len(region):]
    bat = back.context.excerpt.text.index(back.original_text)
    assert back.context.excerpt.text.rstrip("\n") == excerpt.rstrip("\n")
    assert (back.context.excerpt.text[:bat] + back.settled_text
            + back.context.excerpt.text[bat + len(back.original_text):]).rstrip("\n") == after.rstrip("\n")
    assert bat + back.cursor == at + example.cursor
    assert [(s.old_text, s.new_text) for s in back.context.edit_history] == [("import sys\n", "import os\n")]
    # and Zed's JSONL carries the same example
    assert to_settled(parse_json(to_json(zed))) == back


def test_diff_parser_ignores_zed_cursor_annotations() -> None:
    diff = ("--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,2 @@\n a = 1\n-b\n+b = 2\n#    ^[CURSOR]\n")
    (h,) = parse_diff(diff)
    assert h.old == ["a = 1", "b"] and h.new == ["a = 1", "b = 2"]


def test_not_importable() -> None:
    with pytest.raises(ZedFormatError):
        parse_markdown("# just a title\n")
    ex = parse_markdown(RS_EXAMPLE)
    ex.expected_patches = ["--- a/src/config.rs\n+++ b/src/config.rs\n@@ -1 +1 @@\n-nowhere\n+else\n"]
    with pytest.raises(ZedFormatError, match="does not match"):
        to_settled(ex)
    with pytest.raises(ZedFormatError):
        parse_json(msgspec.json.encode({"name": "x"}))
