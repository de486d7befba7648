"""One simulated user session: the editing behaviour (typing, typos, renames, pastes, undo, ...)."""

from __future__ import annotations

import builtins
import keyword
import random
import re
import uuid
from dataclasses import dataclass

from settle.schemas.events import (
    BufferEdited,
    Diagnostic,
    EditOrigin,
    EditStep,
    Event,
    Excerpt,
    OffsetEncoding,
    PredictionRequested,
    PromptContext,
    Span,
)
from settle.streams.simulate.buffer import _Buf, _line_start, _lines_back, _lines_forward
from settle.streams.simulate.config import NOISE_CLASSES, SimulationConfig, _Op
from settle.streams.simulate.sources import _Source

_UNIT = re.compile(r"\n[ \t]*|[ \t]+|\w+|[^\w\s]")
_WORD = re.compile(r"\w+")
_INDENT = re.compile(r"[ \t]*")
_TRAILING_WS = re.compile(r"[ \t]+(?=\n)")
_SKIP_NAMES = frozenset(keyword.kwlist + keyword.softkwlist + dir(builtins) + ["self", "cls"])
_RENAME_SUFFIXES = ("_val", "_obj", "_item", "_ref", "_new", "2", "_ä", "_né", "_π")
_FAR_COMMENTS = (
    "NOTE(agent): keep in sync with the caller",
    "TODO: handle the empty case",
    "XXX: revisit once the API is stable",
    "TODO(josé): vérifier l'encodage ✓",
    "FIXME: naïve retry loop — see issue 42",
    "agent: 🚀 perf hot path",
    "注意: この関数はスレッドセーフではない",
)
# what the simulated formatter changes: 'x' -> "x", a,b -> a, b, a=b -> a = b (not keyword args)
_SINGLE_QUOTED = re.compile(r"(?<![\w'\"])'([^'\"\\\n]*)'(?!')")
_TIGHT_COMMA = re.compile(r",(?=[\w\"'(\[])")
_TIGHT_OP = re.compile(r"(?<=[\w)\]])(==|!=|<=|>=|\+=|-=)(?=[\w(\[])")
_COMMENT_GAP = re.compile(r"(?<=\S) ?#(?= )")  # two spaces before an inline comment
_DOUBLE_SPACE = re.compile(r"(?<=[\w,)=])  +(?=[\w(\[\"'])")  # one space between tokens
_FIDDLE = ("# wip", "# try this", "# hmm", "# é?", "# 🤔", "# debug")
_MODELS = ("zeta-1.3b", "zeta-7b-q4", "edit-pred-v2")
_USERS = ("ana", "bo", "chen", "dmitri", "eve", "fatima", "gus", "hiro")
_PROJECTS = ("api", "billing", "core", "ingest", "tools", "web")
_ENCODINGS: tuple[OffsetEncoding, ...] = ("utf-16", "utf-8", "utf-32")
_ENCODING_WEIGHTS = (0.5, 0.35, 0.15)


@dataclass
class _Task:
    """The chunk a user is typing back into one buffer."""

    buf: _Buf
    cursor: int
    rem: str
    #: cp start of the rewritten area (for range formatting)
    start: int
    chunk: str


class _Session:
    def __init__(
        self,
        rng: random.Random,
        config: SimulationConfig,
        sources: tuple[_Source, ...],
        task_sources: list[_Source],
        start_ms: int,
        buf_base: int,
    ) -> None:
        self.rng = rng
        self.config = config
        self.t = start_ms
        self.session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.consent = rng.random() < config.consent_rate
        self.encoding: OffsetEncoding = rng.choices(_ENCODINGS, _ENCODING_WEIGHTS)[0]
        self.out: list[tuple[int, Event]] = []  # (buffer gid, event) in session order
        self.history: list[list] = []  # [path, old, new, time_ms, gid, merge_end]
        self.n_requests = 0
        self.last_request_ms: dict[int, int] = {}
        #: request id -> noise class of the requests born in noise episodes (not on the wire)
        self.noise: dict[str, str] = {}
        root = f"/home/{rng.choice(_USERS)}/src/{rng.choice(_PROJECTS)}/"

        picked = [rng.choice(sources) for _ in range(rng.choice((1, 2, 2, 3)))]
        if not any(src.funcs for src in picked):
            picked.insert(0, rng.choice(task_sources))
        self.bufs: list[_Buf] = []
        self.tasks: list[_Task] = []
        self.initial: dict[int, str] = {}
        for k, src in enumerate(dict.fromkeys(picked)):
            buf = _Buf(buf_base + k, self.session_id, root + src.name, self.encoding, src.text, src)
            if src.funcs and (not self.tasks or rng.random() < 0.6):
                self._carve(buf, src, rng.choice((1, 1, 2, 2, 3)))
            self.bufs.append(buf)
            self.initial[buf.gid] = buf.text
        # rare (tiny functions only): fall back to the whole rest of a function body
        if not self.tasks:
            buf = next(b for b in self.bufs if b.source.funcs)
            first, end = min(buf.source.funcs, key=lambda f: f[1] - f[0])
            start, stop = buf.source.line_starts[first] - 1, buf.source.line_starts[end] - 1
            self._add_task(buf, [(start, stop)])
            self.initial[buf.gid] = buf.text

    # ---- setup

    def _carve(self, buf: _Buf, src: _Source, want: int) -> None:
        """Remove some lines of a few functions (maybe from mid-line) to be typed back."""
        rng = self.rng
        lines = src.line_starts
        text = src.text
        spans: list[tuple[int, int]] = []
        for _ in range(want * 6):
            if len(spans) == want:
                break
            first, end = rng.choice(src.funcs)
            a = rng.randrange(first, end - 1)
            b = a + rng.randint(2, min(14, end - a))  # chunk = lines [a, b)
            if not text[lines[a] : lines[a + 1]].strip():
                continue
            # start at the newline ending line a-1 so typing starts with "\n" + indent
            start = lines[a] - 1
            stop = lines[b] - 1 if b < len(lines) else len(text)
            if rng.random() < 0.3:  # partially removed: keep the head of line a
                cuts = [m.end() for m in _WORD.finditer(text, lines[a], lines[a + 1] - 1)][:-1]
                if cuts:
                    start = rng.choice(cuts)
            if not 40 <= stop - start <= 1_400:
                continue
            # keep chunks well apart so one's regions never reach another's caret
            if any(start < s1 + 2_000 and s0 < stop + 2_000 for s0, s1 in spans):
                continue
            spans.append((start, stop))
        self._add_task(buf, spans)

    def _add_task(self, buf: _Buf, spans: list[tuple[int, int]]) -> None:
        text = buf.source.text
        pieces = []
        pos = removed = 0
        for start, stop in sorted(spans):
            pieces.append(text[pos:start])
            chunk = text[start:stop]
            at = start - removed
            self.tasks.append(_Task(buf, at, chunk, at, chunk))
            removed += stop - start
            pos = stop
        pieces.append(text[pos:])
        buf.text = "".join(pieces)
        buf.ascii = buf.text.isascii()

    # ---- emission primitives

    def _wait(self, lo: int, hi: int) -> None:
        self.t += self.rng.randint(lo, hi)

    def _edit(self, buf: _Buf, ops: list[_Op], origin: EditOrigin) -> list[_Op]:
        """Emit one BufferEdited at the current time; returns the undo ops."""
        before = buf.text
        reps, inv = buf.apply(ops)
        for task in self.tasks:  # callers fix up the caret of the task being typed
            if task.buf is buf:
                task.cursor = _shift(task.cursor, ops)
                task.start = _shift(task.start, ops, sticky=True)
        self.out.append(
            (
                buf.gid,
                BufferEdited(
                    time_ms=self.t,
                    session_id=self.session_id,
                    path=buf.path,
                    consent=self.consent,
                    encoding=buf.encoding,
                    replacements=reps,
                    origin=origin,
                ),
            )
        )
        self._remember(buf, before, ops, origin)
        return inv

    def _remember(self, buf: _Buf, before: str, ops: list[_Op], origin: EditOrigin) -> None:
        """Keep a coalesced edit history, as an editor shows it to the model."""
        if len(ops) == 1:
            s, e, t = ops[0]
            last = self.history[-1] if self.history else None
            if (
                origin == "typed"
                and s == e
                and last is not None
                and last[4] == buf.gid
                and last[5] == s
                and len(last[2]) < 400
            ):
                last[2] += t
                last[3] = self.t
                last[5] = s + len(t)
                return
            ctx = before[max(_line_start(before, s), s - 30) : s]
            merge_end = s + len(t) if origin == "typed" else -1
            step = [buf.path, ctx + before[s:e][:400], ctx + t[:400], self.t, buf.gid, merge_end]
        else:
            s, e, _ = ops[0]
            step = [buf.path, before[s:e], ops[0][2], self.t, buf.gid, -1]
        self.history.append(step)
        if len(self.history) > 12:
            del self.history[:-8]

    def _type(self, task: _Task, text: str, origin: EditOrigin = "typed") -> None:
        self._edit(task.buf, [(task.cursor, task.cursor, text)], origin)

    # ---- prediction requests

    def _request(
        self, buf: _Buf, cursor: int, task: _Task | None, *, allow_accept: bool = True
    ) -> tuple[int, int, str]:
        """Emit a prediction request at ``cursor``; returns its region (cp start, end) and id."""
        rng = self.rng
        text = buf.text
        rs = _lines_back(text, cursor, rng.randint(1, 3))
        re_ = _lines_forward(text, cursor, rng.randint(1, 3))
        region_text = text[rs:re_]
        rem = task.rem if task is not None and task.buf is buf and task.cursor == cursor else ""
        pre, post = text[rs:cursor], text[cursor:re_]

        kind = rng.choices(("none", "exact", "partial", "noisy", "same"), (35, 30, 15, 15, 5))[0]
        prediction: str | None = None
        take = 0
        if kind != "none":
            idx = _lines_forward(rem, 1, rng.randint(0, 3)) if rem else 0
            if kind == "partial" and idx > 1:
                idx = rng.randint(1, idx - 1)
            take = idx if kind in ("exact", "partial", "noisy") else 0
            prediction = pre + rem[:take] + post
            if kind == "noisy":
                prediction = _mutate(rng, prediction)

        self.n_requests += 1
        ex_s = _lines_back(text, rs, rng.randint(4, 12))
        ex_e = _lines_forward(text, re_, rng.randint(4, 12))
        if ex_e - ex_s > 16_000:  # minified-style long lines: show the region only
            ex_s, ex_e = rs, re_
        ctx = PromptContext(
            edit_history=[
                EditStep(path=h[0], old_text=h[1], new_text=h[2], time_ms=h[3])
                for h in self.history[-rng.randint(2, 6) :]
            ],
            excerpt=Excerpt(path=buf.path, text=text[ex_s:ex_e], start_line=text.count("\n", 0, ex_s)),
            related=self._related(buf),
            diagnostics=self._diagnostics(buf, cursor),
        )
        self.out.append(
            (
                buf.gid,
                PredictionRequested(
                    time_ms=self.t,
                    session_id=self.session_id,
                    path=buf.path,
                    consent=self.consent,
                    encoding=buf.encoding,
                    request_id=f"{self.session_id}-r{self.n_requests}",  # returned as request_id
                    region=Span(start=buf.units(rs), end=buf.units(re_)),
                    region_text=region_text,
                    cursor=buf.units(cursor),
                    context=ctx,
                    production_prediction=prediction,
                    production_model=rng.choice(_MODELS) if prediction is not None else None,
                ),
            )
        )
        self.last_request_ms[buf.gid] = self.t
        request_id = f"{self.session_id}-r{self.n_requests}"

        if prediction is None or prediction == region_text or not allow_accept or task is None:
            return rs, re_, request_id
        if rng.random() < 0.3:  # the user presses tab
            self._wait(250, 1200)
            saved = (task.cursor, task.rem)
            inv = self._edit(buf, [(rs, re_, prediction)], "accepted_prediction")
            if kind == "noisy":  # wrong suggestion: take it back
                self._wait(400, 2500)
                self._edit(buf, inv, "undo")
                task.cursor, task.rem = saved
            else:
                task.cursor = cursor + take
                task.rem = rem[take:]
        return rs, re_, request_id

    def _maybe_request(self, task: _Task, p: float) -> None:
        last = self.last_request_ms.get(task.buf.gid)
        if (last is None or self.t - last >= 1500) and self.rng.random() < p:
            self._wait(30, 200)
            self._request(task.buf, task.cursor, task)

    def _related(self, buf: _Buf) -> list[Excerpt]:
        others = [b for b in self.bufs if b is not buf]
        if not others:
            return []
        rng = self.rng
        out = []
        for b in rng.sample(others, min(len(others), rng.randint(0, 2))):
            src = b.source
            n = len(src.line_starts)
            a = src.funcs[rng.randrange(len(src.funcs))][0] - 1 if src.funcs else rng.randrange(n)
            z = min(n - 1, a + rng.randint(6, 20))
            text = src.text[src.line_starts[a] : src.line_starts[z]]
            out.append(Excerpt(path=b.path, text=text, start_line=a))
        return out

    def _diagnostics(self, buf: _Buf, cursor: int) -> list[Diagnostic]:
        text = buf.text
        ls = _line_start(text, cursor)
        head = text[ls:cursor]
        if head.count("(") > head.count(")"):
            span = Span(start=buf.units(ls), end=buf.units(cursor))
            return [Diagnostic(message="'(' was never closed", severity="error", span=span)]
        if self.rng.random() < 0.06:
            return [Diagnostic(message="Line too long (93 > 79 characters)", severity="warning")]
        return []

    # ---- the session script

    def run(self) -> None:
        rng = self.rng
        busy = rng.random() < self.config.busy_rate
        huge = rng.random() < self.config.huge_paste_rate
        pending = list(self.tasks)
        if rng.random() < 0.3:
            self._glance()
        task = pending[0]
        noise_rate = self.config.noise_rate
        while pending:
            self._burst(task)
            # no draw at all when noise is off: the default stream stays byte-identical
            if noise_rate and rng.random() < noise_rate:
                self._noise(task)
            if task.rem:
                if busy and rng.random() < 0.15:
                    busy = False
                    self._busy(task)
                elif huge and rng.random() < 0.15:
                    huge = False
                    self._huge_paste(task)
                else:
                    self._interlude(task)
                self._pause(task)
            if not task.rem:
                pending.remove(task)
                self._finish(task)
                if pending:
                    self._wait(500, 20_000)
                    task = pending[0]
            elif len(pending) > 1 and rng.random() < 0.06:
                self._wait(2_000, 40_000)  # wanders off to the other file
                task = rng.choice([p for p in pending if p is not task])
            elif rng.random() < 0.02:
                self._glance()

    def _next_unit(self, task: _Task) -> str:
        m = _UNIT.match(task.rem)
        unit = m.group() if m else task.rem[0]
        if unit[0].isalnum() or unit[0] == "_":
            if len(unit) > 4:
                unit = unit[: self.rng.randint(1, 4)]
        task.rem = task.rem[len(unit) :]
        return unit

    def _burst(self, task: _Task) -> None:
        rng = self.rng
        for _ in range(rng.randint(3, 24)):
            if not task.rem:
                return
            m = _WORD.match(task.rem)
            if m and len(m.group()) >= 4 and rng.random() < 0.03:
                self._typo(task, m.group())
            if task.rem[0] == "\n" and rng.random() < 0.03:
                self._wait(50, 300)
                self._type(task, " " * rng.randint(1, 3))  # sloppy trailing whitespace
                task.buf.sloppy = True
            unit = self._next_unit(task)
            self._wait(50, 400)
            ops = [(task.cursor, task.cursor, unit)]
            inv = self._edit(task.buf, ops, "typed")
            if rng.random() < 0.01:
                self._undo_redo(task, ops, inv)
            if unit[0] == "\n":
                self._maybe_request(task, 0.3)
            elif unit in ":(,=":
                self._maybe_request(task, 0.04)

    def _typo(self, task: _Task, word: str) -> None:
        rng = self.rng
        i = rng.randrange(len(word) - 1)
        wrong = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        for piece in _pieces(rng, wrong):
            self._wait(50, 300)
            self._type(task, piece)
        self._wait(300, 1500)
        if rng.random() < 0.5:
            self._edit(task.buf, [(task.cursor - len(wrong), task.cursor, "")], "deleted")
        else:
            for _ in range(len(wrong)):
                self._wait(40, 150)
                self._edit(task.buf, [(task.cursor - 1, task.cursor, "")], "deleted")

    def _undo_redo(self, task: _Task, ops: list[_Op], inv: list[_Op]) -> None:
        """Undo the edit just made (``inv`` undoes ``ops``), then redo it."""
        saved = (task.cursor, task.rem)
        self._wait(300, 1500)
        self._edit(task.buf, inv, "undo")
        self._wait(300, 1500)
        self._edit(task.buf, ops, "redo")
        task.cursor, task.rem = saved

    def _interlude(self, task: _Task) -> None:
        rng = self.rng
        r = rng.random()
        if r < 0.07:
            self._paste(task)
        elif r < 0.10:
            self._junk_paste(task)
        elif r < 0.14:
            self._rename(task)
        elif r < 0.20 and task.buf.sloppy:
            self._format(task)
        elif r < 0.27:
            self._far_edit(task)
        elif r < 0.33:
            self._fix_word(task)

    def _pause(self, task: _Task) -> None:
        rng = self.rng
        r = rng.random()
        at_line_end = not task.rem or task.rem[0] == "\n"
        if r < 0.62:
            self._wait(300, 2_500)
        elif r < 0.86 or not at_line_end:
            self._wait(2_500, 9_000)
        else:
            self._wait(10_500, 45_000)
        self._maybe_request(task, 0.25)

    def _finish(self, task: _Task) -> None:
        rng = self.rng
        if task.buf.sloppy and rng.random() < 0.6:
            self._wait(500, 4_000)
            self._format(task)
        if rng.random() < 0.3:
            self._wait(300, 3_000)
            self._request(task.buf, task.cursor, task)
        if rng.random() < 0.3:
            self._wait(1_000, 8_000)  # an agent touches something far away meanwhile
            self._far_edit(task)

    # ---- editing moves

    def _paste(self, task: _Task) -> None:
        """Paste the next few lines of the chunk (copied from elsewhere)."""
        idx = _lines_forward(task.rem, 1, self.rng.randint(1, 5))
        text, task.rem = task.rem[:idx], task.rem[idx:]
        self._wait(200, 1500)
        ops = [(task.cursor, task.cursor, text)]
        inv = self._edit(task.buf, ops, "paste")
        if self.rng.random() < 0.1:
            self._undo_redo(task, ops, inv)

    def _junk_paste(self, task: _Task) -> None:
        """Paste the wrong clipboard, then undo it."""
        rng = self.rng
        src = rng.choice(self.bufs).source
        a = rng.randrange(len(src.line_starts))
        z = min(len(src.line_starts) - 1, a + rng.randint(2, 8))
        text = src.text[src.line_starts[a] : src.line_starts[z]].rstrip("\n")
        if not text:
            return
        self._wait(200, 1500)
        self._paste_then_undo(task, text, 400, 3000)

    def _huge_paste(self, task: _Task) -> None:
        """Ask for a prediction, then paste > 4 KiB into the region, then undo."""
        rng = self.rng
        self._wait(100, 500)
        self._request(task.buf, task.cursor, task, allow_accept=False)
        src = max(self.bufs, key=lambda b: len(b.source.text)).source
        size = rng.randint(4_500, 12_000)
        a = rng.randrange(max(1, len(src.text) - size))
        text = src.text[a : a + size]
        while len(text) < 4_600:
            text += "\n" + text
        self._wait(300, 2000)
        self._paste_then_undo(task, text, 2_000, 8_000)

    def _paste_then_undo(self, task: _Task, text: str, undo_after_min: int, undo_after_max: int) -> None:
        """Paste ``text`` on a new line at the cursor, regret it, undo; the cursor stays put."""
        saved = task.cursor
        inv = self._edit(task.buf, [(task.cursor, task.cursor, "\n" + text)], "paste")
        self._wait(undo_after_min, undo_after_max)
        self._edit(task.buf, inv, "undo")
        task.cursor = saved

    def _busy(self, task: _Task) -> None:
        """Keep one region busy for over five minutes (never quiet for 10 s)."""
        rng = self.rng
        self._wait(100, 500)
        self._request(task.buf, task.cursor, task, allow_accept=False)
        until = self.t + rng.randint(305_000, 400_000)
        while self.t < until:
            note = rng.choice(_FIDDLE)
            for piece in _pieces(rng, " " + note):
                self._wait(500, 6_000)
                self._type(task, piece)
            self._wait(500, 6_000)
            self._edit(task.buf, [(task.cursor - len(note) - 1, task.cursor, "")], "deleted")

    def _fix_word(self, task: _Task) -> None:
        """Delete a word earlier on the current lines and type it again."""
        rng = self.rng
        buf = task.buf
        ls = _lines_back(buf.text, task.cursor, rng.randint(0, 2))
        words = [m for m in _WORD.finditer(buf.text, ls, task.cursor) if len(m.group()) >= 3]
        if not words:
            return
        m = rng.choice(words)
        self._wait(300, 1500)
        self._edit(buf, [(m.start(), m.end(), "")], "deleted")
        pos = m.start()
        for piece in _pieces(rng, m.group()):
            self._wait(60, 300)
            self._edit(buf, [(pos, pos, piece)], "typed")
            pos += len(piece)

    def _rename(self, task: _Task) -> None:
        """LSP rename of a name used in the chunk: one event, many replacements."""
        rng = self.rng
        buf = task.buf
        text = buf.text
        c = task.cursor
        if c > 0 and _is_word(text[c - 1]) and task.rem[:1] and _is_word(task.rem[0]):
            return
        words = set(_WORD.findall(task.chunk)) - _SKIP_NAMES
        names = sorted(w for w in words if len(w) >= 3 and w.isidentifier() and not w.startswith("__"))
        rng.shuffle(names)
        for old in names[:5]:
            pat = re.compile(r"(?<![\w.])" + re.escape(old) + r"(?!\w)")
            spans = [m.span() for m in pat.finditer(text)]
            if not 2 <= len(spans) <= 40:
                continue
            new = old + rng.choice(_RENAME_SUFFIXES)
            if new in text or new in task.rem:
                continue
            delta = len(new) - len(old)
            if rng.random() < 0.5:
                ops = [(s + k * delta, e + k * delta, new) for k, (s, e) in enumerate(spans)]
            else:
                ops = [(s, e, new) for s, e in reversed(spans)]
            self._wait(500, 3000)
            self._edit(buf, ops, "rename")
            before = text[c - 1 : c]  # lookbehind context for the text still to type
            task.rem = pat.sub(new, before + task.rem)[len(before) :]
            task.chunk = pat.sub(new, task.chunk)
            return

    def _format(self, task: _Task) -> None:
        """Format the edited lines: strip the trailing whitespace typed there."""
        buf = task.buf
        text = buf.text
        lo = _line_start(text, min(task.start, len(text)))
        hi = _lines_forward(text, task.cursor, 1)
        # not at the caret: that whitespace is the indent or space the user is typing on
        spans = [m.span() for m in _TRAILING_WS.finditer(text[lo:hi]) if lo + m.end() != task.cursor]
        buf.sloppy = False
        if not spans:
            return
        ops: list[_Op] = []
        removed = 0
        if self.rng.random() < 0.5:
            for s, e in spans:
                ops.append((lo + s - removed, lo + e - removed, ""))
                removed += e - s
        else:
            ops = [(lo + s, lo + e, "") for s, e in reversed(spans)]
        self._wait(100, 800)
        self._edit(buf, ops, "format")

    def _far_edit(self, task: _Task) -> None:
        """Edit far from the active region (an agent, or a reload): must not touch it."""
        rng = self.rng
        bufs = [task.buf] + [b for b in self.bufs if b is not task.buf]
        buf = bufs[0] if rng.random() < 0.7 else rng.choice(bufs)
        text = buf.text
        marks = [(min(t.start, t.cursor), t.cursor) for t in self.tasks if t.buf is buf]
        for _ in range(6):
            if not text:
                return
            pos = _line_start(text, rng.randrange(len(text)))
            if any(
                lo - 2_000 < pos < hi + 2_000 or text.count("\n", *sorted((pos, hi))) < 40 for lo, hi in marks
            ):
                continue
            if pos > 0 and text[_line_start(text, pos - 1) : pos - 1].rstrip(" \t").endswith("\\"):
                continue  # never split a backslash continuation
            indent = _INDENT.match(text, pos).group()  # type: ignore[union-attr]
            self._wait(200, 2_000)
            if rng.random() < 0.6:
                self._edit(buf, [(pos, pos, f"{indent}# {rng.choice(_FAR_COMMENTS)}\n")], "agent")
            else:
                self._edit(buf, [(pos, pos, "\n")], "other")
            return

    # ---- labelled noise (SimulationConfig.noise_rate)

    def _far_spot(self, task: _Task) -> tuple[_Buf, int] | None:
        """A line start far from every task's caret (as for an agent's far edit), or None."""
        rng = self.rng
        bufs = [task.buf] + [b for b in self.bufs if b is not task.buf]
        buf = bufs[0] if rng.random() < 0.5 else rng.choice(bufs)
        text = buf.text
        marks = [(min(t.start, t.cursor), t.cursor) for t in self.tasks if t.buf is buf]
        for _ in range(6):
            if not text:
                return None
            pos = _line_start(text, rng.randrange(len(text)))
            if any(lo - 2_500 < pos < hi + 2_500 or text.count("\n", *sorted((pos, hi))) < 50 for lo, hi in marks):
                continue
            if not text[pos : _lines_forward(text, pos, 0)].strip():
                continue  # a blank line: nothing there to work on
            return buf, pos
        return None

    def _foreign_lines(self, lo: int, hi: int) -> str:
        """A few whole non-blank lines of code from some session file: 'from elsewhere'."""
        rng = self.rng
        src = rng.choice(self.bufs).source
        n = len(src.line_starts)
        a = rng.randrange(n)
        z = min(n - 1, a + rng.randint(lo, hi))
        text = src.text[src.line_starts[a] : src.line_starts[z]].rstrip("\n")
        return "\n".join(line for line in text.split("\n") if line.strip())[:900]

    def _noise(self, task: _Task) -> None:
        """One labelled noise episode away from the task, then leave the region quiet."""
        rng = self.rng
        kind = rng.choices(NOISE_CLASSES, self.config.noise_weights)[0]
        spot = self._far_spot(task)
        if spot is None:
            return
        buf, pos = spot
        cursor = _lines_forward(buf.text, pos, 0)  # end of that line
        self._wait(1_000, 6_000)  # moves there; the editor asks for a prediction
        rs, re_, request_id = self._request(buf, cursor, None, allow_accept=False)
        self._wait(300, 2_500)
        if getattr(self, f"_noise_{kind}")(buf, rs, re_, cursor):
            self.noise[request_id] = kind
        self._wait(11_000, 30_000)  # leaves it: the region goes quiet and settles

    def _type_at(self, buf: _Buf, pos: int, text: str) -> int:
        for piece in _pieces(self.rng, text):
            self._wait(50, 300)
            self._edit(buf, [(pos, pos, piece)], "typed")
            pos += len(piece)
        return pos

    def _noise_reverted(self, buf: _Buf, rs: int, re_: int, cursor: int) -> bool:
        rng = self.rng
        words = [m for m in _WORD.finditer(buf.text, rs, re_) if len(m.group()) >= 3]
        if not words:
            return False
        m = rng.choice(words)
        inv = self._edit(buf, [(m.start(), m.end(), "")], "deleted")
        end = self._type_at(buf, m.start(), m.group()[: rng.randint(1, 3)] + rng.choice(("tmp", "x", "_old", "2")))
        self._wait(1_000, 6_000)
        # second thoughts: select what was typed and undo both
        self._edit(buf, [(m.start(), end, "")], "undo")
        self._edit(buf, inv, "undo")
        return True

    def _noise_unrelated_rewrite(self, buf: _Buf, rs: int, re_: int, cursor: int) -> bool:
        text = self._foreign_lines(1, 6)
        if not text or text == buf.text[rs:re_]:
            return False
        self._edit(buf, [(rs, re_, "")], "deleted")
        self._type_at(buf, rs, text)
        return True

    def _noise_abandoned_typing(self, buf: _Buf, rs: int, re_: int, cursor: int) -> bool:
        line = self._foreign_lines(1, 1).split("\n")[0].strip()
        if len(line) < 4:
            return False
        indent = _INDENT.match(buf.text, _line_start(buf.text, cursor)).group()  # type: ignore[union-attr]
        units = _UNIT.findall(line)
        fragment = "".join(units[: self.rng.randint(1, max(1, min(4, len(units) - 1)))])
        self._type_at(buf, cursor, "\n" + indent + fragment)
        return True

    def _noise_paste_from_elsewhere(self, buf: _Buf, rs: int, re_: int, cursor: int) -> bool:
        text = self._foreign_lines(2, 8)
        if not text:
            return False
        self._edit(buf, [(cursor, cursor, "\n" + text)], "paste")
        return True

    def _noise_formatter_run(self, buf: _Buf, rs: int, re_: int, cursor: int) -> bool:
        region = buf.text[rs:re_]
        changes = [(m.start(), m.end(), '"' + m.group(1) + '"') for m in _SINGLE_QUOTED.finditer(region)]
        changes += [(m.start(), m.end(), ", ") for m in _TIGHT_COMMA.finditer(region)]
        changes += [(m.start(), m.end(), " " + m.group(1) + " ") for m in _TIGHT_OP.finditer(region)]
        changes += [(m.start(), m.end(), "  #") for m in _COMMENT_GAP.finditer(region)]
        changes += [(m.start(), m.end(), " ") for m in _DOUBLE_SPACE.finditer(region)]
        if not changes:
            return False
        taken: list[tuple[int, int, str]] = []
        for c in sorted(changes):
            if not taken or c[0] >= taken[-1][1]:
                taken.append(c)
        self._edit(buf, [(rs + s, rs + e, t) for s, e, t in reversed(taken)], "format")
        return True

    def _noise_region_deleted(self, buf: _Buf, rs: int, re_: int, cursor: int) -> bool:
        if rs == re_:
            return False
        self._edit(buf, [(rs, re_, "")], "deleted")
        return True

    def _glance(self) -> None:
        """Open another file, ask for a prediction there, and leave it untouched."""
        rng = self.rng
        buf = rng.choice(self.bufs)
        text = buf.text
        if not text:
            return
        pos = _lines_forward(text, rng.randrange(len(text)), 0)
        self._wait(1_000, 10_000)
        self._request(buf, pos, None)
        self._wait(2_000, 15_000)


def _pieces(rng: random.Random, text: str) -> list[str]:
    out = []
    i = 0
    while i < len(text):
        n = rng.randint(1, 4)
        out.append(text[i : i + n])
        i += n
    return out


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _mutate(rng: random.Random, text: str) -> str:
    """A plausible wrong prediction: a misspelt name or a dropped line."""
    lines = text.split("\n")
    if len(lines) > 2 and rng.random() < 0.4:
        del lines[rng.randrange(1, len(lines))]
        return "\n".join(lines)
    words = [m for m in _WORD.finditer(text) if len(m.group()) >= 3]
    if not words:
        return text + " "
    m = rng.choice(words)
    return text[: m.start()] + m.group()[:-1] + "s" + text[m.end() :]


def _shift(pos: int, ops: list[_Op], sticky: bool = False) -> int:
    """Where a position ends up after ops.

    A caret moves along with text inserted at it; a ``sticky`` mark (the start
    of a rewritten area) stays before such text.
    """
    for s, e, t in ops:
        if sticky and s == e == pos:
            continue
        if e <= pos:
            pos += len(t) - (e - s)
        elif s < pos:
            pos = s + len(t)
    return pos
