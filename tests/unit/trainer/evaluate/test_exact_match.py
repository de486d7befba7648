"""Exact match, raw and normalised.
"""

from __future__ import annotations

from settle.trainer.evaluate.exact_match import exact_match, normalize_for_match

# ---------------------------------------------------------------------------------------------
# Exact match


def test_exact_match() -> None:
    assert exact_match("a\n  b\n", "a\n  b\n")
    assert not exact_match("a\n  b \n", "a\n  b\n")
    assert exact_match("a\r\n  b \t\n\n", "a\n  b", normalized=True)
    assert not exact_match("a\n b\n", "a\n  b\n", normalized=True)  # indentation is kept
    assert not exact_match("a\n\nb", "a\nb", normalized=True)  # interior blank lines are kept
    assert normalize_for_match("x  \r\ny\r\n\r\n") == "x\ny"
