"""Real source files the simulated users edit: loading, and indexing their functions."""

from __future__ import annotations

import re
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class _Source:
    name: str
    text: str
    #: code-point offset of each line start
    line_starts: tuple[int, ...]
    #: (first body line, end line) of each function body with >= 3 lines
    funcs: tuple[tuple[int, int], ...]


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _load_sources(source_dir: Path | None, max_files: int, max_bytes: int) -> tuple[_Source, ...]:
    d = Path(source_dir) if source_dir is not None else _stdlib_dir()
    listing = []
    for p in sorted(d.glob("*.py")):
        try:
            st = p.stat()
        except OSError:
            continue
        if p.is_file() and 0 < st.st_size <= max_bytes:
            listing.append((p.name, st.st_size, st.st_mtime_ns))
    # Keyed on the listing so an edited file is re-read, an unchanged one is not.
    return _load_listing(str(d), tuple(listing), max_files)


_DEF = re.compile(r"[ \t]*(?:async[ \t]+)?def[ \t]+\w+")


@lru_cache(maxsize=8)
def _load_listing(d: str, listing: tuple[tuple[str, int, int], ...], max_files: int) -> tuple[_Source, ...]:
    out: list[_Source] = []
    for name, _, _ in listing:
        if len(out) >= max_files:
            break
        try:
            text = (Path(d) / name).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "\r" in text or "\x00" in text:
            continue  # keep line logic simple; such files are rare and unrealistic
        out.append(_index_source(name, text))
    return tuple(out)


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _index_source(name: str, text: str) -> _Source:
    lines = text.split("\n")
    starts = [0] * len(lines)
    pos = 0
    for i, line in enumerate(lines):
        starts[i] = pos
        pos += len(line) + 1
    funcs = []
    for i, line in enumerate(lines):
        if not _DEF.match(line):
            continue
        indent = _indent_of(line)
        # skip the rest of a multi-line signature
        j = i
        while j < len(lines) and not lines[j].rstrip().endswith(":"):
            j += 1
        j += 1
        first = j
        while j < len(lines) and (not lines[j].strip() or _indent_of(lines[j]) > indent):
            j += 1
        while j > first and not lines[j - 1].strip():
            j -= 1
        if j - first >= 3:
            funcs.append((first, j))
    return _Source(name, text, tuple(starts), tuple(funcs))
