"""Safe to keep: what a settled example must pass before it is written to `settled`.

One pure function, :func:`make_safe`, decides for one example:

- **excluded files**: an example whose path matches an exclusion glob is dropped
  (reason ``excluded_path``); context items (edit-history steps, excerpts) from an
  excluded file are removed from an example that is kept (counted ``excluded_context``).
  The default globs are Zed's default ``edit_predictions.disabled_globs`` plus a few
  credential files (see :data:`ZED_DISABLED_GLOBS`, :data:`EXTRA_EXCLUDED_GLOBS`);
- **secrets**: every text field (original and settled region text, edit history,
  excerpts, diagnostics, production prediction) is scanned with detect-secrets'
  plugins (their regexes and entropy limits, called directly: no global settings, no
  network verification) plus a few gitleaks-style rules it lacks (PEM private-key
  blocks across lines, Google API keys, GitHub fine-grained tokens, high-entropy
  values assigned to secret-sounding names). Each secret is replaced by a typed
  placeholder ``<secret:TYPE>`` (the prompt format leaves it whole: it defuses only
  ``<|...|>``). A secret value found in one field is replaced in every field, so the
  region still lines up with its excerpt. The cursor moves with the text (a cursor
  inside a secret lands after its placeholder).

:class:`Safety` adds what needs memory: per-source caps (a bounded, windowed counter
per session and per repository) and the counts of every drop and scrub by reason.
Consent is not decided here: the tracker and the Zed-report mapping drop an example
without consent before it exists.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from msgspec import structs

from settle.schemas.events import Diagnostic, EditStep, Excerpt, PromptContext
from settle.schemas.examples import SettledExample

#: Zed's default ``edit_predictions.disabled_globs`` (assets/settings/default.json)
ZED_DISABLED_GLOBS: tuple[str, ...] = (
    "**/.env*",
    "**/*.pem",
    "**/*.key",
    "**/*.cert",
    "**/*.crt",
    "**/.dev.vars",
    "**/secrets.yml",
    "**/.zed/settings.json",
    "/**/zed/settings.json",
    "/**/zed/keymap.json",
)
#: credential files Zed's list does not name; settle excludes them too
EXTRA_EXCLUDED_GLOBS: tuple[str, ...] = (
    "**/secrets.yaml",
    "**/secrets.json",
    "**/secrets.toml",
    "**/credentials",
    "**/credentials.json",
    "**/credentials.yml",
    "**/credentials.yaml",
    "**/*.p12",
    "**/*.pfx",
    "**/*.keystore",
    "**/*.jks",
    "**/id_rsa*",
    "**/id_dsa*",
    "**/id_ecdsa*",
    "**/id_ed25519*",
    "**/.netrc",
    "**/.pgpass",
    "**/.npmrc",
    "**/.pypirc",
    "**/.aws/credentials",
    "**/.docker/config.json",
    "**/.kube/config",
)
DEFAULT_EXCLUDED_GLOBS: tuple[str, ...] = ZED_DISABLED_GLOBS + EXTRA_EXCLUDED_GLOBS

DropReason = Literal["excluded_path", "session_cap", "repository_cap"]


@dataclass(frozen=True)
class SafetyPolicy:
    """What :func:`make_safe` and :class:`Safety` enforce (``Settings.safety`` builds it)."""

    excluded_globs: tuple[str, ...] = DEFAULT_EXCLUDED_GLOBS
    scrub_secrets: bool = True
    #: settled examples per session / per repository per cap window; 0 = no cap
    max_per_session: int = 2_000
    max_per_repository: int = 20_000
    #: cap window in event time (the example's ``settled_at_ms``)
    cap_window_ms: int = 3_600_000
    #: sources (session or repository, per window) remembered; the oldest is forgotten first
    max_sources: int = 100_000


@dataclass(frozen=True)
class Unsafe:
    """An example that must not be kept, and why."""

    reason: DropReason
    example_id: str
    detail: str = ""


@dataclass(frozen=True)
class Safe:
    """The example to write (scrubbed), and what was taken out of it."""

    example: SettledExample
    #: placeholders written, by secret type
    scrubbed: dict[str, int] = field(default_factory=dict)
    #: context items removed because their file is excluded
    excluded_context: int = 0


# ---------------------------------------------------------------------------
# excluded files


def _glob_body(g: str) -> str:
    out, i = [], 0
    while i < len(g):
        if g.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif g.startswith("**", i):
            out.append(".*")
            i += 2
        elif g[i] == "*":
            out.append("[^/]*")
            i += 1
        elif g[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(g[i]))
            i += 1
    return "".join(out)


@lru_cache(maxsize=64)
def _glob_regex(globs: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex for a set of globs (``**`` any directories, ``*``/``?`` within one name), matched from the start.

    A glob not starting with ``/`` matches relative to any directory (as Zed matches
    relative to the worktree root, and settle does not know the root); matching is
    case-insensitive (a ``.ENV`` on a case-insensitive file system is the same file).
    """
    anywhere: list[str] = []
    rooted: list[str] = []
    for glob in globs:
        g = glob.strip().replace("\\", "/")
        if not g:
            continue
        if g.startswith("/"):
            rooted.append(_glob_body(g.lstrip("/")))
        else:
            while g.startswith("**/"):  # already relative to any directory
                g = g[3:]
            anywhere.append(_glob_body(g))
    parts = []
    if anywhere:
        parts.append("(?:.*/)?(?:" + "|".join(anywhere) + ")")
    if rooted:
        parts.append("/(?:" + "|".join(rooted) + ")")
    if not parts:
        return None
    return re.compile("(?:" + "|".join(parts) + r")\Z", re.IGNORECASE | re.DOTALL)


@lru_cache(maxsize=65_536)
def _excluded(path: str, globs: tuple[str, ...]) -> bool:
    regex = _glob_regex(globs)
    if regex is None:
        return False
    p = path.replace("\\", "/")
    return regex.match(p) is not None or (not p.startswith("/") and regex.match("/" + p) is not None)


def is_excluded(path: str, globs: Sequence[str] = DEFAULT_EXCLUDED_GLOBS) -> bool:
    """Whether ``path`` (relative or absolute, / or \\ separated) matches one of ``globs``."""
    return _excluded(path, tuple(globs))


# ---------------------------------------------------------------------------
# secrets

Span = tuple[int, int, str]  # start, end, secret type

#: detect-secrets' names -> placeholder types (others are slugified)
_TYPE_NAMES = {
    "AWS Access Key": "aws_access_key",
    "Basic Auth Credentials": "password_in_url",
    "JSON Web Token": "jwt",
    "Secret Keyword": "password",
    "Base64 High Entropy String": "high_entropy_string",
    "Hex High Entropy String": "high_entropy_string",
    "GitHub Token": "github_token",
    "Slack Token": "slack_token",
    "Stripe Access Key": "stripe_key",
    "Private Key": "private_key",
}
#: plugins not used: a public IP address is not a secret; private keys are matched as whole blocks below
_SKIPPED_PLUGINS = {"IPPublicDetector", "PrivateKeyDetector"}
#: secret values this short are replaced where they were found, not searched for elsewhere
_MIN_PROPAGATED = 8

_PEM_BLOCK = re.compile(
    r"-----BEGIN[A-Z0-9 _-]*PRIVATE KEY(?: BLOCK)?-----[^\x00]*?(?:-----END[A-Z0-9 _-]*PRIVATE KEY(?: BLOCK)?-----|(?=\x00)|\Z)",
)
_PEM_BODY_LINE = re.compile(r"[A-Za-z0-9+/=]{16,}")
#: gitleaks-style rules detect-secrets does not have: (type, regex, group holding the secret)
_EXTRA_RULES: tuple[tuple[str, re.Pattern[str], int], ...] = (
    ("gcp_api_key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"), 0),
    ("github_token", re.compile(r"\bgithub_pat_[0-9A-Za-z_]{60,}"), 0),
    ("github_token", re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9_]{36,}"), 0),
    ("slack_token", re.compile(r"\bxox[abposr]-[0-9A-Za-z-]{10,}"), 0),
    ("stripe_key", re.compile(r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}"), 0),
    ("password_in_url", re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@'\"]+:([^\s@/'\"]+)@"), 1),
    (
        "generic_secret",
        # run over ASCII-lower-cased text (same offsets; a case-sensitive alternation is much faster)
        re.compile(
            r"(?:key|api|token|secret|passwd|password|pwd|auth|credential)[\w.-]{0,20}[\"']?\s*"
            r"(?:=|:|:=|=>|\?=)\s*[\"'`]?([0-9a-z_+/=.~-]{16,200})"
        ),
        1,
    ),
)
_GENERIC_MIN_ENTROPY = 3.5
#: what an assignment to a secret-sounding name holds in ordinary code: an attribute path
#: (``self.sampler.tokenizer``) or a plain identifier; never scrubbed by the generic rule
_CODE_REFERENCE = re.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+(?:\(\))?|[a-z_]+")


def _entropy(s: str) -> float:
    counts = Counter(s)
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


@lru_cache(maxsize=1)
def _plugins() -> tuple[tuple[str, object], ...]:
    """detect-secrets' plugin classes, instantiated with their defaults (name, instance)."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    out = []
    for secret_type, cls in sorted(get_mapping_from_secret_type_to_class().items()):
        if cls.__name__ in _SKIPPED_PLUGINS:
            continue
        out.append((_TYPE_NAMES.get(secret_type) or re.sub(r"[^a-z0-9]+", "_", secret_type.lower()).strip("_"), cls()))
    return tuple(out)


def _looks_fake(value: str) -> bool:
    from detect_secrets.filters.heuristic import (
        is_not_alphanumeric_string,
        is_potential_uuid,
        is_sequential_string,
        is_templated_secret,
    )

    return (
        is_sequential_string(value)
        or is_potential_uuid(value)
        or is_templated_secret(value)
        or is_not_alphanumeric_string(value)
        or value.startswith("<secret:")
    )


@lru_cache(maxsize=32)
def _rules(filetype: object) -> tuple[tuple[str, re.Pattern[str], str, object], ...]:
    """Every rule as (type, regex, how to read a match, its parameter), for one file type.

    detect-secrets' plugins hold their regexes as attributes; they are run here over
    the whole text once each (their patterns do not cross lines: ``.`` stops at a newline).
    """
    from detect_secrets.plugins.base import RegexBasedDetector
    from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin
    from detect_secrets.plugins.keyword import (
        QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP,
        REGEX_BY_FILETYPE,
        KeywordDetector,
    )

    rules: list[tuple[str, re.Pattern[str], str, object]] = []
    for kind, plugin in _plugins():
        if isinstance(plugin, HighEntropyStringsPlugin):
            rules.append((kind, plugin.regex, "entropy", plugin))
        elif isinstance(plugin, KeywordDetector):
            table = REGEX_BY_FILETYPE.get(filetype, QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP)
            rules.extend((kind, regex, "group", group) for regex, group in table.items())
        elif isinstance(plugin, RegexBasedDetector):
            rules.extend((kind, regex, "last", None) for regex in plugin.denylist)
    rules.extend((kind, regex, "generic" if kind == "generic_secret" else "group", group)
                 for kind, regex, group in _EXTRA_RULES)
    return tuple(rules)


@lru_cache(maxsize=4096)
def _filetype(path: str) -> object:
    from detect_secrets.util.filetype import determine_file_type

    return determine_file_type(path)


def _group(kind: str, regex: re.Pattern[str]) -> int:
    """0: detect-secrets' keyword rules, 1: other rules bound to a secret-sounding word, 2: the rest."""
    if kind == "password":
        return 0
    return 1 if kind in _KEYWORD_KINDS or (kind == "aws_access_key" and regex.groups > 0) else 2


@lru_cache(maxsize=32)
def _grouped_rules(filetype: object) -> tuple[tuple[tuple[str, re.Pattern[str], str, object], ...], ...]:
    rules = _rules(filetype)
    return tuple(tuple(r for r in rules if _group(r[0], r[1]) == g) for g in range(3))


def _spans(text: str, path: str, group: int) -> list[Span]:
    """Spans of one group of rules over ``text``."""
    spans: list[Span] = []
    lowered = text.translate(_ASCII_LOWER) if group == 1 else text
    for kind, regex, how, param in _grouped_rules(_filetype(path))[group]:
        for m in regex.finditer(lowered if how == "generic" else text):
            if how == "entropy":
                value = m.group(2)
                if param.calculate_shannon_entropy(value) > param.entropy_limit and not _looks_fake(value):  # type: ignore[attr-defined]
                    spans.append((m.start(2), m.end(2), kind))
            elif how == "last":
                # the secret is the last group when it is one (an assignment's value),
                # else the whole match (GitHub's only group is the token's prefix)
                g = regex.groups
                while g > 0 and (m.group(g) is None or len(m.group(g)) < 4):
                    g -= 1
                if m.end(g) > m.start(g):
                    spans.append((m.start(g), m.end(g), kind))
            else:
                g = param  # type: ignore[assignment]
                value = text[m.start(g):m.end(g)] if m.group(g) is not None else None
                if not value or len(value) < 4 or _looks_fake(value):
                    continue
                if how == "generic" and (_entropy(value) < _GENERIC_MIN_ENTROPY
                                         or _CODE_REFERENCE.fullmatch(lowered[m.start(g):m.end(g)])):
                    continue
                spans.append((m.start(g), m.end(g), kind))
    return spans


#: a line can hold a secret only if it has a secret-sounding word, a URL with a user,
#: a key block, or a run of 16+ token characters with a digit in it (random keys
#: almost always have one: a 24-character base64 key lacks one once in 150)
_TRIGGER_WORD = re.compile(r"key|pass|pw|token|secret|auth|cred|contrase|api|begin|bearer|://|@")
#: rules that only match next to one of those words (an assignment to a secret-sounding
#: name): run over the lines that hold one, not over every candidate line
#: detect-secrets' keyword detector needs one of its DENYLIST words on the line
_DENYLIST_WORD = re.compile(r"api_?key|auth_?key|service_?key|account_?key|db_?key|database_?key|priv_?key"
                            r"|private_?key|client_?key|db_?pass|database_?pass|key_?pass|password|passwd|pwd"
                            r"|secret|contrase")
_KEYWORD_KINDS = {"password", "generic_secret", "cloudant_credentials", "ibm_cloud_iam_key",
                  "ibm_cos_hmac_credentials", "softlayer_credentials"}
_TRIGGER_TOKEN = re.compile(r"[A-Za-z0-9_+/=\-]{16,}")
_DIGIT = re.compile(r"\d")
#: ASCII lower-casing that keeps every offset (str.lower can change a string's length)
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def _candidate_lines(text: str, hits: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The lines holding a hit, joined by newlines, and (offset in the join, offset in text) per line."""
    starts: list[tuple[int, int]] = []
    pieces: list[str] = []
    at = 0
    last_line_start = -1
    for hit in sorted(hits):
        line_start = text.rfind("\n", 0, hit) + 1
        if line_start == last_line_start:
            continue
        line_end = text.find("\n", hit)
        line_end = len(text) if line_end < 0 else line_end
        starts.append((at, line_start))
        pieces.append(text[line_start:line_end])
        at += line_end - line_start + 1
        last_line_start = line_start
    return "\n".join(pieces), starts


def find_secrets(text: str, path: str = "") -> list[Span]:
    """Secrets in ``text`` as (start, end, type) code-point spans, sorted, not overlapping."""
    if len(text) < 8:
        return []
    spans = [(m.start(), m.end(), "private_key") for m in _PEM_BLOCK.finditer(text)]
    lowered = text.translate(_ASCII_LOWER)
    words = [m.start() for m in _TRIGGER_WORD.finditer(lowered)]
    denylisted = [m.start() for m in _DENYLIST_WORD.finditer(lowered)] if words else []
    tokens = [m.start() for m in _TRIGGER_TOKEN.finditer(text) if _DIGIT.search(m.group())]
    for group, hits in ((0, denylisted), (1, words), (2, words + tokens)):
        if not hits:
            continue
        joined, starts = _candidate_lines(text, hits)
        joined_starts = [j for j, _ in starts]
        for start, end, kind in _spans(joined, path, group):
            i = bisect_right(joined_starts, start) - 1
            shift = starts[i][1] - starts[i][0]
            spans.append((start + shift, end + shift, kind))
    if "<secret:" in text:  # a placeholder is no secret (so scrubbing twice changes nothing)
        placed = [(m.start(), m.end()) for m in _PLACEHOLDER.finditer(text)]
        spans = [s for s in spans if not any(s[0] < e and p < s[1] for p, e in placed)]
    return _merge(spans)


_PLACEHOLDER = re.compile(r"<secret:[a-z0-9_]+>")


#: when spans of two rules overlap, the more specific type names the placeholder
_GENERIC_KINDS = {"high_entropy_string": 1, "generic_secret": 2, "password": 3}


def _merge(spans: Iterable[Span]) -> list[Span]:
    """Overlapping spans as one, named by the most specific type among them."""
    out: list[Span] = []
    for start, end, kind in sorted(spans, key=lambda s: (s[0], -(s[1] - s[0]), _GENERIC_KINDS.get(s[2], 0))):
        if out and start < out[-1][1]:
            s0, e0, k0 = out[-1]
            specific = _GENERIC_KINDS.get(kind, 0) < _GENERIC_KINDS.get(k0, 0)
            out[-1] = (s0, max(e0, end), kind if specific else k0)
        else:
            out.append((start, end, kind))
    return out


def placeholder(kind: str) -> str:
    return f"<secret:{kind}>"


#: between the fields of one example when they are scanned as one text (no rule matches across it)
_SEP = "\n\x00\n"


class _Scrubber:
    """Scrubs the fields of one example, scanned together in one pass, with one shared set of secret values."""

    def __init__(self, fields: Sequence[str], path: str) -> None:
        joined = _SEP.join(fields)
        found = find_secrets(joined, path)
        self.found: list[list[Span]] = [[] for _ in fields]
        values: dict[str, str] = {}
        if found:
            bounds = []
            at = 0
            for f in fields:
                bounds.append(at)
                at += len(f) + len(_SEP)
            for start, end, kind in found:
                i = bisect_right(bounds, start) - 1
                lo = bounds[i]
                s0, e0 = start - lo, min(end - lo, len(fields[i]))
                if e0 <= s0:
                    continue
                self.found[i].append((s0, e0, kind))
                value = fields[i][s0:e0]
                if len(value) >= _MIN_PROPAGATED:
                    if kind == "private_key":
                        for line in _PEM_BODY_LINE.findall(value):
                            values.setdefault(line, kind)
                    values.setdefault(value, kind)
        self.values = values
        self.regex = (
            re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))) if values else None
        )
        self.counts: Counter[str] = Counter()

    def spans(self, index: int, text: str) -> list[Span]:
        spans = self.found[index]
        if self.regex is not None and text:
            spans = spans + [(m.start(), m.end(), self.values[m.group(0)]) for m in self.regex.finditer(text)]
        return _merge(spans) if spans else spans

    def scrub(self, index: int, text: str, cursor: int | None = None) -> tuple[str, int | None]:
        spans = self.spans(index, text)
        if not spans:
            return text, cursor
        out: list[str] = []
        at = written = 0
        new_cursor = cursor
        for start, end, kind in spans:
            out.append(text[at:start])
            written += start - at
            ph = placeholder(kind)
            if cursor is not None:
                if start < cursor < end:
                    new_cursor = written + len(ph)  # after the placeholder: never inside it
                elif cursor >= end:
                    new_cursor = cursor + (written + len(ph)) - end
            out.append(ph)
            written += len(ph)
            self.counts[kind] += 1
            at = end
        out.append(text[at:])
        return "".join(out), new_cursor


def _scrub(example: SettledExample, excluded: Sequence[str]) -> tuple[SettledExample, dict[str, int], int]:
    ctx = example.context
    removed = 0
    history = [s for s in ctx.edit_history if not is_excluded(s.path, excluded)]
    related = [e for e in ctx.related if not is_excluded(e.path, excluded)]
    removed += len(ctx.edit_history) - len(history) + len(ctx.related) - len(related)
    excerpt = ctx.excerpt
    if excerpt is not None and excerpt.path != example.path and is_excluded(excerpt.path, excluded):
        excerpt, removed = None, removed + 1
    fields: list[str] = [example.original_text, example.settled_text]
    fields += [s.old_text for s in history] + [s.new_text for s in history]
    fields += [e.text for e in related] + [d.message for d in ctx.diagnostics]
    fields += [excerpt.text] if excerpt is not None else []
    fields += [example.production_prediction] if example.production_prediction is not None else []
    sc = _Scrubber(fields, example.path)
    index = iter(range(len(fields)))

    def scrub(text: str) -> str:
        return sc.scrub(next(index), text)[0]

    original, cursor = sc.scrub(next(index), example.original_text, example.cursor)
    settled = scrub(example.settled_text)
    olds = [scrub(s.old_text) for s in history]
    news = [scrub(s.new_text) for s in history]
    new_history = [EditStep(path=s.path, old_text=o, new_text=n, time_ms=s.time_ms) for s, o, n in zip(history, olds, news)]
    new_related = [Excerpt(path=e.path, text=scrub(e.text), start_line=e.start_line) for e in related]
    new_diags = [Diagnostic(message=scrub(d.message), severity=d.severity, span=d.span) for d in ctx.diagnostics]
    new_excerpt = (
        None if excerpt is None else Excerpt(path=excerpt.path, text=scrub(excerpt.text), start_line=excerpt.start_line)
    )
    prediction = None if example.production_prediction is None else scrub(example.production_prediction)
    if not sc.counts and not removed:
        return example, {}, 0
    context = PromptContext(edit_history=new_history, excerpt=new_excerpt, related=new_related, diagnostics=new_diags)
    safe = structs.replace(
        example, original_text=original, settled_text=settled, cursor=cursor if cursor is not None else 0,
        context=context, production_prediction=prediction,
    )
    return safe, dict(sc.counts), removed


def make_safe(example: SettledExample, policy: SafetyPolicy = SafetyPolicy()) -> Safe | Unsafe:
    """The example as it may be kept (context from excluded files removed, secrets scrubbed), or why not.

    Pure and deterministic: the same example and policy give the same answer, so a
    replay writes byte-identical records. Caps are not applied here (see :class:`Safety`).
    """
    if is_excluded(example.path, policy.excluded_globs):
        return Unsafe("excluded_path", example.id, f"path {example.path!r} matches an excluded glob")
    if not policy.scrub_secrets:
        ctx = example.context
        if not any(is_excluded(p, policy.excluded_globs) for p in
                   [s.path for s in ctx.edit_history] + [e.path for e in ctx.related]
                   + ([ctx.excerpt.path] if ctx.excerpt is not None else [])):
            return Safe(example)
    safe, scrubbed, removed = _scrub(example, policy.excluded_globs)
    if not policy.scrub_secrets:
        # only the excluded context goes; the texts stay as they were
        safe = structs.replace(example, context=safe.context if removed else example.context)
        scrubbed = {}
    return Safe(safe, scrubbed, removed)


def source_keys(example: SettledExample) -> tuple[str, str]:
    """(user, repository) an example is capped under.

    The user is the session. Telemetry names no repository, so the repository is
    approximated: a Zed example file's import carries it in its session
    (``zed:<repository_url>@<revision>``); otherwise it is the worktree the path
    names: its first component for a relative path (Zed's worktree-relative paths
    begin with the worktree root's name), its first three for an absolute one
    (``/home/alice/project``).
    """
    if example.session_id.startswith("zed:"):
        return example.session_id, example.session_id[4:].rsplit("@", 1)[0]
    path = example.path.replace("\\", "/")
    parts = [p for p in path.split("/") if p]
    if path.startswith("/"):
        return example.session_id, "/" + "/".join(parts[:3])
    return example.session_id, parts[0] if len(parts) > 1 else "."


@dataclass
class Safety:
    """:func:`make_safe` plus per-source caps, with every drop and scrub counted.

    Caps count the examples let through per (session, window) and (repository,
    window) of event time. Memory is bounded by ``max_sources``; the counts live
    in the worker, so a restarted worker starts them afresh (a cap is a bound per
    worker and partition, not an exact global quota).
    """

    policy: SafetyPolicy = field(default_factory=SafetyPolicy)
    #: examples dropped, by reason
    dropped: Counter[str] = field(default_factory=Counter)
    #: placeholders written, by secret type; "excluded_context" = context items removed
    scrubbed: Counter[str] = field(default_factory=Counter)
    _counts: OrderedDict[tuple[str, str, int], int] = field(default_factory=OrderedDict, repr=False)

    def apply(self, example: SettledExample) -> SettledExample | None:
        """The example to write, or None (counted in ``dropped``)."""
        verdict = make_safe(example, self.policy)
        if isinstance(verdict, Unsafe):
            self.dropped[verdict.reason] += 1
            return None
        user, repo = source_keys(example)
        window = example.settled_at_ms // max(1, self.policy.cap_window_ms)
        for kind, key, cap in (("session_cap", user, self.policy.max_per_session),
                               ("repository_cap", repo, self.policy.max_per_repository)):
            if cap > 0 and self._counts.get((kind, key, window), 0) >= cap:
                self.dropped[kind] += 1
                return None
        for kind, key, cap in (("session_cap", user, self.policy.max_per_session),
                               ("repository_cap", repo, self.policy.max_per_repository)):
            if cap > 0:
                k = (kind, key, window)
                self._counts[k] = self._counts.get(k, 0) + 1
                self._counts.move_to_end(k)
        while len(self._counts) > self.policy.max_sources:
            self._counts.popitem(last=False)
        self.scrubbed.update(verdict.scrubbed)
        if verdict.excluded_context:
            self.scrubbed["excluded_context"] += verdict.excluded_context
        return verdict.example
