"""Exact match of a predicted region against the settled one, raw or after benign normalisation.

Its own module because "byte for byte" and "the same code" differ (CRLF, trailing blanks) and both
rates are reported; the normalisation is ours, kept deliberately small.
"""

from __future__ import annotations

__all__ = ["exact_match", "normalize_for_match"]


def normalize_for_match(text: str) -> str:
    """Line endings to ``\\n``, trailing spaces/tabs stripped from every line, trailing blank lines
    dropped. Indentation and interior blank lines are kept (they matter in code)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip(" \t\f\v") for line in text.split("\n")).rstrip("\n")


def exact_match(prediction: str, settled: str, *, normalized: bool = False) -> bool:
    """``prediction == settled`` byte for byte (code points); with ``normalized=True`` compare
    ``normalize_for_match`` of both (ignores CRLF vs LF, trailing whitespace, trailing blank
    lines)."""
    if normalized:
        return normalize_for_match(prediction) == normalize_for_match(settled)
    return prediction == settled
