"""The one JSONL reader and writer: numbered raw lines in, encoded records out.

Decoding is left to the caller so that a bad line is reported (CLI) or
dead-lettered (streams) with its line number instead of aborting the file.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from .codecs import encode

PathOrFile = str | os.PathLike[str] | BinaryIO


def read_lines(source: PathOrFile) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line without its line ending) for every non-blank line.

    ``source`` is a path, ``"-"`` for standard input, or a binary file object.
    Raises OSError when a path cannot be opened.
    """
    if isinstance(source, (str, os.PathLike)):
        if str(source) == "-":
            yield from read_lines(sys.stdin.buffer)
            return
        with open(source, "rb") as fh:
            yield from read_lines(fh)
        return
    for lineno, line in enumerate(source, 1):
        raw = line.rstrip(b"\r\n")
        if raw.strip():
            yield lineno, raw


def write_records(records: Iterable[Any], target: PathOrFile | io.TextIOBase) -> int:
    """Write one encoded record per line to a path, ``"-"`` (stdout) or a file; returns lines written."""
    if isinstance(target, (str, os.PathLike)):
        if str(target) == "-":
            return write_records(records, sys.stdout.buffer)
        with open(target, "wb") as fh:
            return write_records(records, fh)
    text_mode = isinstance(target, io.TextIOBase)
    n = 0
    for record in records:
        line = encode(record) + b"\n"
        target.write(line.decode("utf-8") if text_mode else line)  # type: ignore[arg-type]
        n += 1
    target.flush()
    return n
