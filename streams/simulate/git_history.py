"""Editing sessions made from a real repository's history (`settle simulate --git REPO`).

A team can try settle on its own code before it has any telemetry: every commit
in the range becomes one session in which a user turns each changed file from
its parent's version into the commit's, hunk by hunk. Before a hunk the editor
requests a prediction for the lines around it; the changed tokens are then
deleted and typed in bursts (keystroke gaps, pauses between bursts, now and
then a long think that lets the region settle mid-hunk and brings a new
request); sometimes an edit elsewhere in the file (a line inserted above and
removed later) shifts the open regions. Big hunks are pasted.

The simulator checks itself. It keeps every buffer whole and, for each region,
computes the expected outcome by whole-buffer replay: apply every edit to the
full text, move the region by the tracker's boundary rule, cut it out when its
quiet period ends (or drop it: TTL, size cap). It then runs the region
tracker on the events it wrote and counts matches, and checks that every
buffer ends as the commit's blob.

``git`` is run as a subprocess (``git rev-list``, ``git diff``, ``git cat-file``).
"""

from __future__ import annotations

import difflib
import random
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from settle.schemas.events import (
    BufferEdited,
    EditOrigin,
    EditStep,
    Event,
    Excerpt,
    OffsetEncoding,
    PredictionRequested,
    PromptContext,
    Replacement,
    Span,
    Tick,
)
from settle.schemas.examples import SettledExample
from settle.streams.settling.tracker import TrackerConfig, region_id
from settle.streams.simulate.config import DEFAULT_START_MS, FINAL_TICK_DELAY_MS

_TOKEN = re.compile(r"\n[ \t]*|[ \t]+|\w+|[^\w\s]")
_ENCODINGS: tuple[OffsetEncoding, ...] = ("utf-16", "utf-8", "utf-32")
_FOREIGN = ("# TODO: revisit\n", "# NOTE: keep in sync\n", "# é ✓ checked\n", "# 🚧 wip\n")


class GitError(RuntimeError):
    """The repository or the revision range cannot be read."""


@dataclass(frozen=True)
class GitSimConfig:
    repo: Path
    #: revision range for ``git rev-list`` (e.g. ``v1.0..HEAD``); None = the last ``max_commits`` of HEAD
    rev: str | None = None
    max_commits: int = 30
    max_files_per_commit: int = 3
    max_file_bytes: int = 200_000
    #: files whose name ends with one of these; empty = every text file
    suffixes: tuple[str, ...] = ()
    seed: int = 0
    start_ms: int = DEFAULT_START_MS
    #: a tick (trusted partition clock) every this many ms of event time; 0 = only the final one
    tick_interval_ms: int = 1_000
    #: a hunk whose new text is longer than this is pasted, not typed
    paste_chars: int = 1_500
    #: chance per burst boundary of a pause longer than the quiet period
    think_rate: float = 0.08
    #: chance per hunk of an edit elsewhere in the file while its region is open
    elsewhere_rate: float = 0.35
    #: context lines around a hunk in its requested region
    context_lines: int = 2
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


@dataclass
class _Expected:
    """The oracle's view of one region: span in the whole buffer (code points) and its fate."""

    rid: str
    request_id: str
    start: int
    end: int
    birth_ms: int
    last_ms: int
    outcome: str | None = None  # "settled", "ttl", "too_large"
    text: str | None = None


@dataclass
class GitSimReport:
    commits: int = 0
    files: int = 0
    hunks: int = 0
    events: int = 0
    regions: int = 0
    expected: dict[str, int] = field(default_factory=dict)
    #: regions the reference tracker settled
    settled: int = 0
    matched: int = 0
    mismatched: int = 0
    missing: int = 0
    unexpected: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    buffers_equal_commit: int = 0
    buffers: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.mismatched == 0 and self.missing == 0 and self.unexpected == 0
                and self.buffers_equal_commit == self.buffers)

    def lines(self) -> list[str]:
        exp = ", ".join(f"{k} {v}" for k, v in sorted(self.expected.items()))
        drops = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        return [
            f"{self.commits} commits, {self.files} files, {self.hunks} hunks -> {self.events:,} edit and request "
            f"events (ticks not counted), {self.regions} regions requested",
            f"expected by whole-buffer replay: {exp}",
            f"region tracker: {self.settled} settled; matched {self.matched}, mismatched {self.mismatched}, "
            f"missing {self.missing}, unexpected {self.unexpected}; dropped: {drops}",
            f"buffers ending as the commit's blob: {self.buffers_equal_commit}/{self.buffers}",
            "self-check: " + ("OK" if self.ok else "FAILED"),
        ]


# ---------------------------------------------------------------------- git


def _git(repo: Path, *args: str) -> bytes:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True, timeout=120)
    except FileNotFoundError:
        raise GitError("git is not installed") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[0]
        raise GitError(f"git {args[0]}: {detail}") from None
    return out.stdout


def commits(config: GitSimConfig) -> list[str]:
    """Commits with exactly one parent, oldest first."""
    rev = config.rev or "HEAD"
    out = _git(config.repo, "rev-list", "--no-merges", "--min-parents=1", f"--max-count={config.max_commits}",
               rev).decode().split()
    return list(reversed(out))


def changed_files(config: GitSimConfig, commit: str) -> list[tuple[str, str, str]]:
    """(path, old text, new text) of modified text files (added ones start empty)."""
    raw = _git(config.repo, "diff-tree", "-r", "--no-commit-id", "--name-status", "-z", f"{commit}^", commit)
    parts = raw.decode(errors="surrogateescape").split("\0")
    out = []
    for status, path in zip(parts[::2], parts[1::2]):
        if status not in ("M", "A") or (config.suffixes and not path.endswith(config.suffixes)):
            continue
        try:
            new = _git(config.repo, "cat-file", "blob", f"{commit}:{path}")
            old = b"" if status == "A" else _git(config.repo, "cat-file", "blob", f"{commit}^:{path}")
        except GitError:
            continue
        if max(len(old), len(new)) > config.max_file_bytes or b"\0" in old + new:
            continue
        if status == "A" and len(new) > config.paste_chars * 4:
            continue
        try:
            out.append((path, old.decode("utf-8"), new.decode("utf-8")))
        except UnicodeDecodeError:
            continue
        if len(out) >= config.max_files_per_commit:
            break
    return out


# ----------------------------------------------------------------- session


def _units(text: str, encoding: OffsetEncoding) -> int:
    if encoding == "utf-8":
        return len(text.encode("utf-8"))
    if encoding == "utf-16":
        return len(text.encode("utf-16-le")) // 2
    return len(text)


class _Buffer:
    """One file being edited: the whole text, the open regions (oracle), the events it produced."""

    def __init__(self, sim: "_GitSession", path: str, text: str) -> None:
        self.sim = sim
        self.path = path
        self.text = text
        self.regions: list[_Expected] = []
        self.history: list[EditStep] = []

    # -- the oracle: the tracker's rules on the whole buffer

    def _touches(self, s: int, e: int, r: _Expected) -> bool:
        """Does replacing [s, e) join region r? The tracker's boundary rule ("absorb" unless configured)."""
        if getattr(self.sim.config.tracker, "boundary", "absorb") == "exclusive":
            return (s < r.end and e > r.start) or (r.start == r.end and s == e == r.start)
        return s <= r.end and e >= r.start

    def _decide(self, r: _Expected, t: int | None) -> None:
        """Close r if an event at time t (None = end of input) comes after its fate."""
        cfg = self.sim.config.tracker
        fate = min(r.last_ms + cfg.quiescence_ms, r.birth_ms + cfg.ttl_ms)
        if t is None or t >= fate:
            if r.last_ms + cfg.quiescence_ms <= r.birth_ms + cfg.ttl_ms:
                r.outcome, r.text = "settled", self.text[r.start:r.end]
            else:
                r.outcome = "ttl"

    def _open(self) -> list[_Expected]:
        return [r for r in self.regions if r.outcome is None]

    def edit(self, s: int, e: int, new: str, origin: EditOrigin) -> None:
        """Replace [s, e) (code points) at the current time: one BufferEdited event."""
        sim = self.sim
        t = sim.t
        for r in self._open():
            self._decide(r, t)
        enc = sim.encoding
        us = _units(self.text[:s], enc)
        ue = us + _units(self.text[s:e], enc)
        delta = len(new) - (e - s)
        cap = sim.config.tracker.max_region_bytes
        for r in self._open():
            if s > r.end:
                continue
            if e < r.start:
                r.start += delta
                r.end += delta
                continue
            if not self._touches(s, e, r):
                continue
            r.start, r.end = min(s, r.start), max(e, r.end) + delta
            r.last_ms = t
        old = self.text[s:e]
        self.text = self.text[:s] + new + self.text[e:]
        for r in self._open():
            if r.last_ms == t and len(self.text[r.start:r.end].encode()) > cap:
                r.outcome = "too_large"
        sim.emit(BufferEdited(time_ms=t, session_id=sim.session_id, path=self.path, consent=True, encoding=enc,
                              replacements=[Replacement(start=us, end=ue, text=new)], origin=origin))
        if old != new:
            self.history.append(EditStep(path=self.path, old_text=old[:400], new_text=new[:400], time_ms=t))
            self.history = self.history[-4:]

    def request(self, start: int, end: int, cursor: int) -> None:
        sim = self.sim
        t = sim.t
        for r in self._open():
            self._decide(r, t)
        sim.n_requests += 1
        request_id = f"{sim.session_id}-r{sim.n_requests}"
        rid = region_id(sim.session_id, self.path, request_id)
        enc = sim.encoding
        us = _units(self.text[:start], enc)
        region_text = self.text[start:end]
        lines_before = self.text.rfind("\n", 0, max(0, start - 1200)) + 1
        after = self.text.find("\n", min(len(self.text), end + 1200))
        excerpt = self.text[lines_before: len(self.text) if after < 0 else after + 1]
        r = _Expected(rid, request_id, start, end, t, t)
        if len(region_text.encode()) > sim.config.tracker.max_region_bytes:
            r.outcome = "too_large"
        self.regions.append(r)
        sim.emit(PredictionRequested(
            time_ms=t, session_id=sim.session_id, path=self.path, consent=True, encoding=enc,
            request_id=request_id, region=Span(start=us, end=us + _units(region_text, enc)), region_text=region_text,
            cursor=us + _units(self.text[start:cursor], enc),
            context=PromptContext(edit_history=list(self.history),
                                  excerpt=Excerpt(path=self.path, text=excerpt,
                                                  start_line=self.text.count("\n", 0, lines_before))),
        ))

    def finish(self) -> None:
        for r in self._open():
            self._decide(r, None)


class _GitSession:
    def __init__(self, config: GitSimConfig, commit: str, t0: int, events: list[tuple[int, int, Event]],
                 report: GitSimReport) -> None:
        self.config = config
        self.rng = random.Random(f"settle-git:{config.seed}:{commit}")
        self.session_id = f"git-{commit[:12]}"
        self.encoding: OffsetEncoding = self.rng.choice(_ENCODINGS)
        self.t = t0
        self.events = events
        self.report = report
        self.n_requests = 0

    def emit(self, event: Event) -> None:
        self.events.append((event.time_ms, len(self.events), event))

    def wait(self, lo: int, hi: int) -> None:
        self.t += self.rng.randint(lo, hi)

    def run_file(self, path: str, old: str, new: str) -> _Buffer:
        buf = _Buffer(self, path, old)
        old_lines, new_lines = old.splitlines(keepends=True), new.splitlines(keepends=True)
        matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
        c = self.config.context_lines
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            self.report.hunks += 1
            # The buffer is new[:j1] + old[i1:] here, so the hunk starts at len(new[:j1]).
            pos = sum(map(len, new_lines[:j1]))
            before = sum(map(len, new_lines[max(0, j1 - c):j1]))
            old_block = "".join(old_lines[i1:i2])
            after = sum(map(len, old_lines[i2:i2 + c]))
            self.wait(1_500, 8_000)  # reading, navigating
            buf.request(pos - before, pos + len(old_block) + after, pos)
            self.wait(200, 1_200)
            self._type_hunk(buf, pos, old_block, "".join(new_lines[j1:j2]))
        buf.finish()
        return buf

    def _type_hunk(self, buf: _Buffer, pos: int, old_block: str, new_block: str) -> None:
        rng = self.rng
        foreign: tuple[int, str] | None = None
        if rng.random() < self.config.elsewhere_rate and pos > 0:
            # an edit elsewhere: a line inserted above the hunk now, removed again after it
            at = buf.text.rfind("\n", 0, max(0, pos - rng.randint(200, 2_000))) + 1
            line = rng.choice(_FOREIGN)
            buf.edit(at, at, line, "agent")
            foreign = (at, line)
            pos += len(line)
            self.wait(300, 2_000)
        if len(new_block) > self.config.paste_chars:
            buf.edit(pos, pos + len(old_block), new_block, "paste")
        else:
            a, b = _TOKEN.findall(old_block), _TOKEN.findall(new_block)
            p = pos
            ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
            for tag, i1, i2, j1, j2 in ops:
                old_text, new_text = "".join(a[i1:i2]), "".join(b[j1:j2])
                if tag == "equal":
                    p += len(old_text)
                    continue
                if old_text:
                    buf.edit(p, p + len(old_text), "", "deleted")
                    self.wait(150, 900)
                p = self._type(buf, p, b[j1:j2])
        if foreign is not None:
            at, line = foreign
            self.wait(500, 3_000)
            assert buf.text[at:at + len(line)] == line
            buf.edit(at, at + len(line), "", "agent")

    def _type(self, buf: _Buffer, p: int, tokens: list[str]) -> int:
        """Type tokens at p in bursts; returns the position after them."""
        rng = self.rng
        i = 0
        while i < len(tokens):
            burst = tokens[i:i + rng.randint(1, 6)]
            i += len(burst)
            for tok in burst:
                buf.edit(p, p, tok, "typed")
                p += len(tok)
                self.wait(60, 350)
            if rng.random() < self.config.think_rate:
                self.wait(self.config.tracker.quiescence_ms + 1_000, self.config.tracker.quiescence_ms + 25_000)
                if i < len(tokens):  # back at it: the editor asks again around the caret
                    ls = buf.text.rfind("\n", 0, max(0, p - 1)) + 1
                    le = buf.text.find("\n", p)
                    buf.request(ls, len(buf.text) if le < 0 else le + 1, p)
                    self.wait(100, 600)
            else:
                self.wait(400, 3_500)
        return p


# -------------------------------------------------------------------- driver


@dataclass
class GitSimulation:
    events: list[Event]
    expected: dict[str, _Expected]
    report: GitSimReport
    final_texts: dict[tuple[str, str], tuple[str, str]]


def generate(config: GitSimConfig) -> GitSimulation:
    """Events for every commit in the range, one session after another, with ticks; and the oracle."""
    report = GitSimReport()
    keyed: list[tuple[int, int, Event]] = []
    expected: dict[str, _Expected] = {}
    finals: dict[tuple[str, str], tuple[str, str]] = {}
    t = config.start_ms
    for commit in commits(config):
        files = changed_files(config, commit)
        if not files:
            continue
        report.commits += 1
        session = _GitSession(config, commit, t, keyed, report)
        for path, old, new in files:
            report.files += 1
            buf = session.run_file(path, old, new)
            for r in buf.regions:
                expected[r.rid] = r
            finals[(session.session_id, path)] = (buf.text, new)
        t = session.t + 60_000
    report.events = len(keyed)
    max_t = max((k[0] for k in keyed), default=config.start_ms)
    if config.tick_interval_ms > 0 and keyed:
        tick = config.start_ms + config.tick_interval_ms
        while tick <= max_t:
            keyed.append((tick, -1, Tick(time_ms=tick, source="simulate-git")))
            tick += config.tick_interval_ms
    keyed.sort(key=lambda k: (k[0], k[1] == -1, k[1]))
    events = [e for _, _, e in keyed]
    if events:
        events.append(Tick(time_ms=max_t + FINAL_TICK_DELAY_MS, source="simulate-git"))
    report.regions = len(expected)
    for r in expected.values():
        report.expected[r.outcome or "open"] = report.expected.get(r.outcome or "open", 0) + 1
    report.buffers = len(finals)
    report.buffers_equal_commit = sum(1 for have, want in finals.values() if have == want)
    return GitSimulation(events, expected, report, finals)


def self_check(sim: GitSimulation, tracker: TrackerConfig) -> GitSimReport:
    """Run the region tracker on the events and compare with the whole-buffer expectation.

    The pure tracker, not the whole offline reference: what is checked is region
    tracking; the safety pass that follows it in the stream (secret scrubbing,
    excluded paths, caps) rewrites or drops examples on purpose.
    """
    from settle.streams.settling.tracker import Tracker

    t = Tracker(tracker)
    examples: list[SettledExample] = []
    for position, event in enumerate(sim.events):
        examples.extend(o for o in t.process(event, position) if isinstance(o, SettledExample))
    report = sim.report
    got: dict[str, SettledExample] = {e.id: e for e in examples}
    report.settled = len(got)
    report.dropped = dict(t.stats.dropped_by_reason)
    for rid, r in sim.expected.items():
        ex = got.get(rid)
        if r.outcome == "settled":
            if ex is None:
                report.missing += 1
                report.mismatches.append(f"{r.request_id}: expected settled, tracker did not settle it")
            elif ex.settled_text == r.text:
                report.matched += 1
            else:
                report.mismatched += 1
                report.mismatches.append(f"{r.request_id}: settled text differs")
        elif ex is not None:
            report.unexpected += 1
            report.mismatches.append(f"{r.request_id}: expected {r.outcome}, tracker settled it")
    return report
