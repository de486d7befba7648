"""One simulated buffer: its text, offsets in the declared encoding, and line helpers."""

from __future__ import annotations

from settle.schemas.events import (
    OffsetEncoding,
    Replacement,
)
from settle.streams.simulate.config import _Op
from settle.streams.simulate.sources import _Source


class _Buf:
    """One open file of a session: its text, with exact offset conversion."""

    __slots__ = ("gid", "session_id", "path", "encoding", "text", "ascii", "source", "sloppy")

    def __init__(
        self, gid: int, session_id: str, path: str, encoding: OffsetEncoding, text: str, source: _Source
    ) -> None:
        self.gid = gid
        self.session_id = session_id
        self.path = path
        self.encoding = encoding
        self.text = text
        self.ascii = text.isascii()
        self.source = source
        self.sloppy = False  # has typed trailing whitespace a formatter would fix

    def units(self, i: int) -> int:
        """Code-point index -> offset in the buffer's encoding."""
        if self.ascii or self.encoding == "utf-32":
            return i
        return _units_len(self.text[:i], self.encoding)

    def apply(self, ops: list[_Op]) -> tuple[list[Replacement], list[_Op]]:
        """Apply cp ops in order; return wire replacements and the inverse ops."""
        reps: list[Replacement] = []
        inv: list[_Op] = []
        for s, e, t in ops:
            text = self.text
            old = text[s:e]
            us = self.units(s)
            fast = self.ascii or self.encoding == "utf-32"
            ue = us + (len(old) if fast else _units_len(old, self.encoding))
            reps.append(Replacement(start=us, end=ue, text=t))
            inv.append((s, s + len(t), old))
            self.text = text[:s] + t + text[e:]
            if self.ascii and not t.isascii():
                self.ascii = False
        inv.reverse()
        return reps, inv


def _units_len(s: str, encoding: str) -> int:
    """Length of ``s`` in the declared offset units.

    Deliberately not ``settle.streams.settling.offsets.units_len``: the simulator is the
    oracle the tracker's offset arithmetic is tested against, so it counts with the
    codecs themselves and shares no code with what it checks.
    """
    if encoding == "utf-8":
        return len(s.encode("utf-8"))
    if encoding == "utf-16":
        return len(s.encode("utf-16-le")) // 2
    return len(s)


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def _lines_back(text: str, pos: int, n: int) -> int:
    """Start of the line n lines above the line containing pos."""
    ls = _line_start(text, pos)
    for _ in range(n):
        if ls == 0:
            break
        ls = _line_start(text, ls - 1)
    return ls


def _lines_forward(text: str, pos: int, n: int) -> int:
    """End (the newline's index) of the line n lines below the line containing pos."""
    end = text.find("\n", pos)
    if end < 0:
        return len(text)
    for _ in range(n):
        nxt = text.find("\n", end + 1)
        if nxt < 0:
            return len(text)
        end = nxt
    return end
