"""Fuzz every decoder and entry point: no exception escapes, every bad record gets a reason.

    python bench/fuzz.py                      # hypothesis, 2,000 inputs per entry point
    python bench/fuzz.py --examples 20000     # more
    python bench/fuzz.py --atheris --runs 50000   # also coverage-guided (pip install atheris)

Entry points and what must hold for any input:

=================  =========================================================================
edits              ``decode_event`` returns an event or raises ``InvalidRecord`` with a known
                   reason; ``PartitionSettler.handle`` (a stream of records into one settler)
                   never raises, and every record it cannot use comes back as one dead letter
                   carrying its raw bytes, a reason and an error
settled            ``BatchScorer.handle`` (the real tiny student) never raises; an undecodable
                   record becomes a dead letter with the shared classifier's reason
                   (``malformed``, ``byte_order_mark``, ... else ``invalid_settled``), every
                   other one is scored
kept, scored       ``decode_kept`` raises only ``InvalidTrainingRecord`` with a reason;
                   ``decode_scored`` only ``InvalidRecord`` with a known reason
models             ``decode_model`` only ``InvalidRecord`` with a known reason (what the
                   scorer's models follower catches and dead-letters)
jsonl              ``settle reference FILE`` exits 0 and names every bad line on stderr
                   (``FILE:N: reason: ...``), exits 2 with ``error:`` under ``--strict``
ingest bodies      ``content_coding``/``decompress``/``split_values`` raise only ``BodyError``;
                   every value of a body then decodes or has an ``InvalidRecord`` reason
zed reports        ``decode_batch`` raises only ``InvalidRecord``; ``map_report`` never
                   raises, whatever request it is joined with
zed files          ``parse_markdown``/``parse_json``/``to_settled`` raise only ``ZedFormatError``
safety             ``make_safe`` never raises and is idempotent
=================  =========================================================================

Prints inputs tried and failures found per entry point; exits 1 when any failed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from settle.schemas.codecs import (
    InvalidRecord,
    decode,
    decode_event,
    decode_model,
    decode_scored,
    decode_settled,
    encode,
)
from settle.schemas.events import PredictionRequested
from settle.schemas.examples import DeadLetter
from settle.schemas.models import ModelPublished
from settle.schemas.scored import ScoredExample

# -- seeds: valid records to mutate ----------------------------------------------------------


def _seed_events() -> list[bytes]:
    from settle.streams.simulate import SimulationConfig, simulate

    return [encode(e) for e in simulate(SimulationConfig(sessions=2, seed=5))][:400]


_SEEDS: dict[str, list[bytes]] = {}


def seeds(kind: str) -> list[bytes]:
    if kind not in _SEEDS:
        if kind == "edits":
            _SEEDS[kind] = _seed_events()
        elif kind == "settled":
            from settle.streams.settling.reference import settle_records

            _SEEDS[kind] = [encode(e) for e in settle_records(enumerate(seeds("edits")), flush=True).examples][:40]
        elif kind == "scored":
            _SEEDS[kind] = [_scored_seed(raw) for raw in seeds("settled")[:10]]
        elif kind == "models":
            _SEEDS[kind] = [encode(ModelPublished(name="student", version="v3", status="published", location="/models/v3",
                                                  created_at_ms=1, metrics={"chrf": 0.5}, data_offsets={0: (0, 9)}))]
        elif kind == "zed_md":
            _SEEDS[kind] = [_ZED_MD.encode()]
        elif kind == "zed_json":
            _SEEDS[kind] = [json.dumps(_ZED_JSON).encode()]
        elif kind == "zed_report":
            _SEEDS[kind] = [json.dumps({"predictions": [_ZED_REPORT]}).encode()]
    return _SEEDS[kind]


def _scored_seed(settled: bytes) -> bytes:
    from settle.schemas.scored import BandPolicy, Decision

    ex = decode_settled(settled)
    decision = Decision(decision="keep", reason="fuzz seed", samples_used=2, solved=1, solve_rate=0.5,
                        policy=BandPolicy())
    return encode(ScoredExample(id=ex.id, example=ex, decision=decision, samples=["a", "b"], distances=[1, None],
                                normalised=[0.5, None], model_name="student", model_version="v1"))


_ZED_MD = """+++
repository_url = "https://github.com/o/r"
revision = "abc"
+++

## Edit History

```diff
--- a/src/a.py
+++ b/src/a.py
@@ -1,2 +1,2 @@
-x = 1
+x = 2
 y = 3
```

## Cursor Position

```src/a.py
def f():
    return 1
#   ^[CURSOR_POSITION]
```

## Expected Patch

```diff
--- a/src/a.py
+++ b/src/a.py
@@ -1,2 +1,2 @@
 def f():
-    return 1
+    return 2
```
"""
_ZED_JSON = {
    "name": "ex", "repository_url": "https://github.com/o/r", "revision": "abc", "cursor_path": "src/a.py",
    "cursor_position": "def f():\n    return 1\n#   ^[CURSOR_POSITION]\n", "edit_history": "",
    "expected_patches": ["--- a/src/a.py\n+++ b/src/a.py\n@@ -1,2 +1,2 @@\n def f():\n-    return 1\n+    return 2\n"],
}
_ZED_REPORT = {
    "request_id": "r1", "settled_editable_region": "x = 2\n", "can_collect_data": True, "model_version": "zeta-1",
}


# -- input strategies ---------------------------------------------------------------------------

_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(),
    st.text(max_size=30), st.sampled_from(["prediction_requested", "buffer_edited", "tick", "utf-8", "utf-16",
                                           "utf-32", "typed", "<|editable_region_end|>", "<secret:x>", "\ud800"[:0]]),
)
_json = st.recursive(_json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=5),
                     max_leaves=20)


def _mutate(seed_kind: str) -> st.SearchStrategy[bytes]:
    """A valid record of ``seed_kind``, then up to 4 byte-level edits (flip, insert, delete, truncate, splice)."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds(seed_kind))))
        for _ in range(draw(st.integers(0, 4))):
            op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice", "bom"]))
            at = draw(st.integers(0, max(0, len(data))))
            if op == "flip" and data:
                at = min(at, len(data) - 1)
                data[at] = draw(st.integers(0, 255))
            elif op == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(
                    [b'"', b"\\", b"\\ud800", b"{", b"]", b"\xff", b"\xc3", b"-1", b"1e400", b"null", b"\x00"]))
            elif op == "delete":
                del data[at : at + draw(st.integers(1, 16))]
            elif op == "truncate":
                del data[at:]
            elif op == "splice":
                other = draw(st.sampled_from(seeds(seed_kind)))
                data[at:] = other[draw(st.integers(0, len(other))):]
            elif op == "bom":
                data[0:0] = b"\xef\xbb\xbf"
        return bytes(data)

    return build()


@st.composite
def _field_swap(draw: st.DrawFn, seed_kind: str) -> bytes:
    """A valid record with one field (at any depth) replaced by any JSON value, as JSON or msgpack."""
    obj = msgspec.json.decode(draw(st.sampled_from(seeds(seed_kind))))

    def paths(o: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        out = [prefix]
        if isinstance(o, dict):
            for k, v in o.items():
                out += paths(v, prefix + (k,))
        elif isinstance(o, list):
            for i, v in enumerate(o):
                out += paths(v, prefix + (i,))
        return out

    target = draw(st.sampled_from(paths(obj)[1:] or [()]))
    value = draw(_json)
    if target:
        parent = obj
        for k in target[:-1]:
            parent = parent[k]
        if draw(st.booleans()) and isinstance(parent, dict):
            parent.pop(target[-1], None)
        else:
            parent[target[-1]] = value
    fmt = draw(st.sampled_from(["json", "json", "msgpack"]))
    try:
        return msgspec.json.encode(obj) if fmt == "json" else msgspec.msgpack.encode(obj)
    except (TypeError, OverflowError, ValueError, msgspec.EncodeError):
        return json.dumps(obj, default=str).encode("utf-8", "surrogatepass")


@st.composite
def _line_edit(draw: st.DrawFn, seed_kind: str) -> bytes:
    """A valid text record with lines deleted, duplicated, swapped or replaced (Markdown specs)."""
    lines = draw(st.sampled_from(seeds(seed_kind))).split(b"\n")
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(lines) - 1)) if lines else 0
        op = draw(st.sampled_from(["delete", "dup", "swap", "replace"]))
        if not lines:
            lines = [b""]
        elif op == "delete":
            del lines[at]
        elif op == "dup":
            lines.insert(at, lines[at])
        elif op == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        else:
            lines[at] = draw(st.sampled_from([b"```", b"+++", b"@@ -1,2 +1,2 @@", b"@@ -9,0 +9,0 @@", b"-", b"+",
                                              b"#   ^[CURSOR_POSITION]", b"## Expected Patch", b"--- a/", b"\xff",
                                              b"revision = ", b"[x]"])) + draw(st.binary(max_size=6))
    return b"\n".join(lines)


def records(seed_kind: str) -> st.SearchStrategy[bytes]:
    structured = _field_swap(seed_kind) if seed_kind != "zed_md" else _line_edit(seed_kind)
    return st.one_of(
        st.binary(max_size=300),
        _json.map(lambda o: json.dumps(o).encode("utf-8", "surrogatepass")),
        _mutate(seed_kind),
        structured,
        st.sampled_from(seeds(seed_kind)),
    )


# -- the properties (each raises AssertionError on a violation) ---------------------------------

DECODER_REASONS = {
    "payload_too_large", "malformed", "not_an_object", "unsupported_version", "unknown_kind", "invalid_event",
    "byte_order_mark", "invalid_utf8", "lone_surrogate",
}
#: what the shared classifier (``codecs.classify``) says of any topic's value before its own checks
TEXT_REASONS = {"malformed", "not_an_object", "unsupported_version", "byte_order_mark", "invalid_utf8", "lone_surrogate"}
SETTLED_REASONS = TEXT_REASONS | {"invalid_settled"}


def check_edits(batch: list[tuple[bytes | None, bytes | None]], timestamps: list[int] | None = None) -> None:
    """A stream of (key, value) records into one PartitionSettler, then a tick far ahead.

    With ``timestamps`` (Kafka record timestamps, any int), the settler runs its clock on them too.
    """
    from settle.streams.settling.partition import PartitionSettler

    settler = PartitionSettler(0, record_time=timestamps is not None)
    settled: list[bytes] = []
    for offset, (key, value) in enumerate(batch + [(None, encode({"kind": "tick", "v": 1, "time_ms": 10**13}))]):
        stamp = timestamps[offset % len(timestamps)] if timestamps else None
        raw = value or b""
        try:
            decode_event(raw)
            bad = None
        except InvalidRecord as exc:
            assert exc.reason in DECODER_REASONS, exc.reason
            bad = exc.reason
        outs = settler.handle(offset, key, value, stamp)
        letters = [decode(o.value, DeadLetter) for o in outs if o.topic == "dead-letter"]
        for o in outs:
            assert o.topic in ("settled", "dead-letter"), o.topic
            if o.topic == "settled":
                decode_settled(o.value)
        if bad is not None:
            assert [(d.reason, d.offset, d.value) for d in letters] == [(bad, offset, raw)], (bad, letters)
        assert all(d.reason and d.error and d.source_topic == "edits" for d in letters)
        settled += [o.value for o in outs if o.topic == "settled"]
    if timestamps is None and all(k is None for k, _ in batch):
        # the stream's settler and the offline reference agree, record for record
        from settle.streams.settling.reference import settle_records

        values = [v or b"" for _, v in batch] + [encode({"kind": "tick", "v": 1, "time_ms": 10**13})]
        assert settled == [encode(e) for e in settle_records(enumerate(values)).examples]


class FuzzSource:
    """The real tiny student, built once (needs the `train` extra to build)."""

    _source: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls._source is None:
            from settle.streams.runtime.student import OnnxStudent

            path = Path(os.environ.get("SETTLE_FUZZ_STUDENT", "")) if os.environ.get("SETTLE_FUZZ_STUDENT") else None
            if path is None:
                from settle.trainer.student.build import make_model_dir

                path = make_model_dir(Path(tempfile.mkdtemp(prefix="fuzz-student-")) / "v0", shape="tiny", max_files=20)
            cls._source = OnnxStudent(path)
        return cls._source


def check_settled(values: list[bytes]) -> None:
    from settle.schemas.scored import BandPolicy
    from settle.streams.contracts.sampling import SamplingConfig
    from settle.streams.records import Consumed
    from settle.streams.scoring.batch import BatchScorer
    from settle.streams.scoring.score import ScoringConfig

    config = ScoringConfig(policy=BandPolicy(k=1, round_size=1), sampling=SamplingConfig(max_new_tokens=2, seed=1))
    scorer = BatchScorer(config)
    consumed = [Consumed("t.settled", 0, i, b"k", v) for i, v in enumerate(values)]
    result = scorer.handle(consumed, FuzzSource.get())
    reasons, ids = [], set()
    for v in values:
        try:
            ids.add(decode_settled(v).id)
        except InvalidRecord as exc:
            reasons.append(exc.reason)
    letters = [decode(o.value, DeadLetter) for o in result.outputs if o.topic == "dead-letter"]
    assert [d.reason for d in letters] == reasons and all(d.error for d in letters)
    assert set(reasons) <= SETTLED_REASONS, reasons
    assert {s.id for s in result.scored} == ids


def check_kept(raw: bytes) -> None:
    from settle.trainer.data.records import InvalidTrainingRecord, decode_kept

    try:
        decode_kept(raw)
    except InvalidTrainingRecord as exc:
        assert exc.reason in {"empty", "malformed", "byte_order_mark", "invalid_utf8", "lone_surrogate", "not_an_object",
                              "unsupported_version", "not_scored", "invalid_schema"}
    try:
        decode_scored(raw)
    except InvalidRecord as exc:
        assert exc.reason in TEXT_REASONS | {"invalid_scored"}, exc.reason


def check_models(raw: bytes) -> None:
    try:
        decode_model(raw)
    except InvalidRecord as exc:
        assert exc.reason in TEXT_REASONS | {"invalid_model_message"}, exc.reason


def check_jsonl(lines: list[bytes], strict: bool = False) -> None:
    from typer.testing import CliRunner

    from settle.schemas.jsonl import read_lines
    from settle.streams.cli import app

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "in.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        result = CliRunner().invoke(app, ["reference", str(path), *(["--strict"] if strict else [])])
        bad = []  # the file's own lines (a value holding a newline is two of them), as the CLI reads them
        for n, raw in read_lines(path):
            try:
                decode_event(raw)
            except InvalidRecord:
                bad.append(n)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("".join(traceback.format_exception(result.exception)))
    err = result.stderr if hasattr(result, "stderr") else result.output
    if strict and bad:
        assert result.exit_code == 2 and "error:" in err, (result.exit_code, err[-500:])
    elif not strict:
        assert result.exit_code == 0, (result.exit_code, err[-2000:])
        for n in bad:
            assert f"in.jsonl:{n}: " in err, (n, err[-1000:])


def check_ingest_body(body: bytes, header: str | None) -> None:
    from settle.streams.ingest.bodies import BodyError, content_coding, decompress, split_values

    try:
        content_coding(header, body)
        payload = decompress(body, header, 64 * 1024)
        items = split_values(payload)
    except BodyError as exc:
        assert exc.reason and 400 <= exc.status < 500
        return
    for item in items:
        try:
            decode_event(item.raw)
        except InvalidRecord as exc:
            assert exc.reason in DECODER_REASONS


def check_zed_report(raw: bytes, request: bytes) -> None:
    from settle.streams.ingest import zed_settled

    try:
        batch = zed_settled.decode_batch(raw)
    except InvalidRecord as exc:
        assert exc.reason in TEXT_REASONS | {"invalid_batch"}, exc.reason
        return
    try:
        req = decode_event(request)
    except InvalidRecord:
        req = None
    joined = req if isinstance(req, PredictionRequested) else None
    for report in batch.predictions:
        mapped = zed_settled.map_report(report, joined, 5_000)
        assert mapped.outcome in ("settled", "no_consent", "unmatched_request", "no_settled_region", "invalid")
        if mapped.example is not None:
            decode_settled(encode(mapped.example))
            from settle.streams.settling.safety import make_safe

            make_safe(mapped.example)


def check_zed_file(raw: bytes, markdown: bool) -> None:
    from settle.streams.formats.zed_examples import ZedFormatError, parse_json, parse_markdown, to_settled
    from settle.streams.settling.safety import make_safe

    try:
        ex = parse_markdown(raw.decode("utf-8", "replace")) if markdown else parse_json(raw)
        settled = to_settled(ex)
    except ZedFormatError:
        return
    decode_settled(encode(settled))
    make_safe(settled)


def check_safety(raw: bytes) -> None:
    from settle.streams.settling.safety import Safe, make_safe

    try:
        ex = decode_settled(raw)
    except msgspec.DecodeError:
        return
    first = make_safe(ex)
    if isinstance(first, Safe):
        again = make_safe(first.example)
        assert isinstance(again, Safe) and again.example == first.example, "make_safe is not idempotent"


# -- hypothesis driver --------------------------------------------------------------------------


@dataclass
class Tally:
    tried: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


_TEXT = st.lists(st.sampled_from(list("ab \n\t{}()=\u00e9\u4e2d") + ["\U0001f600", "\u0301", "\r\n", "\x00"]),
                 max_size=12).map("".join)


@st.composite
def _buffer_stream(draw: st.DrawFn) -> list[bytes]:
    """Events of two buffers, mostly well-formed (requests whose text fits their range), with
    adversarial offsets, texts (astral, combining, CRLF, NUL), encodings and clocks."""
    from settle.streams.settling.offsets import units_len

    out: list[bytes] = []
    clock = draw(st.integers(0, 10**6))
    for _ in range(draw(st.integers(1, 12))):
        clock += draw(st.sampled_from([0, 1, 500, 5_000, 11_000, 60_000, -3_000, 400_000]))
        enc = draw(st.sampled_from(["utf-8", "utf-16", "utf-32"]))
        base = {"v": 1, "session_id": draw(st.sampled_from(["s1", "s2"])), "path": "a.py",
                "consent": draw(st.sampled_from([True, True, True, False])), "encoding": enc,
                "time_ms": max(0, clock)}
        if draw(st.integers(0, 2)) == 0:
            text = draw(_TEXT)
            start = draw(st.integers(0, 30))
            end = start + units_len(text, enc)  # type: ignore[arg-type]
            if draw(st.integers(0, 5)) == 0:
                end += draw(st.integers(-3, 3))
            ev = {**base, "kind": "prediction_requested", "request_id": draw(st.sampled_from(["r1", "r2", "r3"])),
                  "region": {"start": start, "end": max(start, end)}, "region_text": text,
                  "cursor": draw(st.integers(start, max(start, end))), "production_prediction": draw(st.none() | _TEXT)}
        else:
            reps = [{"start": x, "end": x + draw(st.integers(0, 5)), "text": draw(_TEXT)}
                    for x in draw(st.lists(st.integers(0, 40), min_size=1, max_size=3))]
            ev = {**base, "kind": "buffer_edited", "replacements": reps,
                  "origin": draw(st.sampled_from(["typed", "paste", "undo"]))}
        if draw(st.integers(0, 6)) == 0:
            ev = {"kind": "tick", "v": 1, "time_ms": max(0, clock + draw(st.integers(-10**5, 10**6)))}
        out.append(msgspec.json.encode(ev))
    return out


_PROMPT_TEXT = st.lists(st.sampled_from(
    ["a", "b", "\n", " ", "\U0001f600", "\u0301", "\r\n", "<|editable_region_end|>", "<|editable_region_start|>",
     "<|user_cursor_is_here|>", "<|endoftext|>", "<|output|>", "<|", "|>", "<secret:x>", "AKIAQX7Z2M4K9R3T5W8Y"]),
    max_size=10).map("".join)


@st.composite
def _settled_examples(draw: st.DrawFn) -> bytes:
    """Settled examples that decode (any text, special tokens included, any cursor), as JSON."""
    original = draw(_PROMPT_TEXT)
    excerpt = draw(st.none() | st.tuples(_PROMPT_TEXT, _PROMPT_TEXT).map(lambda t: t[0] + original + t[1]) | _PROMPT_TEXT)
    ex = {
        "v": 1, "id": draw(st.sampled_from(["e1", "e2", "e3"])), "request_id": "r", "session_id": "s",
        "path": draw(st.sampled_from(["a.py", "<|output|>", "", ".env", "x/" * 30])), "encoding": "utf-32",
        "requested_at_ms": draw(st.integers(-5, 10**15)), "settled_at_ms": draw(st.integers(-(2**63), 2**63 - 1)),
        "original_text": original, "settled_text": draw(_PROMPT_TEXT | st.just(original)),
        "cursor": draw(st.integers(-3, len(original) + 3)),
        "context": {
            "edit_history": [{"path": "a.py", "old_text": draw(_PROMPT_TEXT), "new_text": draw(_PROMPT_TEXT)}
                             for _ in range(draw(st.integers(0, 2)))],
            "excerpt": None if excerpt is None else {"path": "a.py", "text": excerpt, "start_line": draw(st.integers(0, 9))},
            "related": [{"path": "b.py", "text": draw(_PROMPT_TEXT)} for _ in range(draw(st.integers(0, 2)))],
            "diagnostics": [{"message": draw(_PROMPT_TEXT)} for _ in range(draw(st.integers(0, 2)))],
        },
        "production_prediction": draw(st.none() | _PROMPT_TEXT),
    }
    return msgspec.json.encode(ex)


def check_prompt(raw: bytes) -> None:
    """What the scorer renders for an example that decodes: a prompt, or a reason it cannot."""
    from settle.schemas.scored import BandPolicy
    from settle.streams.contracts.prompt import render_prompt, render_target
    from settle.streams.scoring.band import screen

    ex = decode_settled(raw)
    if screen(ex, BandPolicy()) is None:  # what score_batch renders
        render_prompt(ex, max_chars=BandPolicy().max_prompt_chars)
        render_target(ex)
    check_safety(raw)


def _keyed(value: st.SearchStrategy[bytes]) -> st.SearchStrategy[tuple[bytes | None, bytes | None]]:
    key = st.one_of(st.none(), st.binary(max_size=20), st.just(b"s1\x1fsrc/a.py"))
    return st.tuples(key, st.one_of(value, st.none(), st.just(b"")))


def entry_points() -> dict[str, tuple[st.SearchStrategy[Any], Callable[..., None], int]]:
    """name -> (strategy of one input, property, relative cost: inputs per unit of the budget)."""
    return {
        "edits": (st.lists(_keyed(records("edits")), min_size=1, max_size=12), check_edits, 1),
        "edits_stream": (
            st.tuples(_buffer_stream().map(lambda vs: [(None, v) for v in vs]),
                      st.none() | st.lists(st.integers(-(2**63), 2**63), min_size=1, max_size=5)),
            lambda a: check_edits(*a), 1,
        ),
        "settled": (st.lists(records("settled"), min_size=1, max_size=4), check_settled, 10),
        "settled_text": (st.lists(_settled_examples(), min_size=1, max_size=4), check_settled, 10),
        "prompt": (_settled_examples(), check_prompt, 1),
        "kept": (records("scored"), check_kept, 1),
        "models": (records("models"), check_models, 1),
        "jsonl": (st.tuples(st.lists(records("edits"), min_size=1, max_size=8), st.booleans()),
                  lambda a: check_jsonl(*a), 10),
        "ingest_body": (
            st.tuples(
                st.one_of(
                    st.lists(records("edits"), max_size=5).map(lambda xs: b"\n".join(xs)),
                    st.lists(records("edits"), max_size=5).map(lambda xs: b"[" + b",".join(xs) + b"]"),
                    st.lists(records("edits"), max_size=3).map(lambda xs: gzip.compress(b"\n".join(xs))),
                    st.binary(max_size=200),
                ),
                st.sampled_from([None, "", "identity", "gzip", "zstd", "br", "gzip, zstd", "GZIP"]),
            ),
            lambda a: check_ingest_body(*a), 1,
        ),
        "zed_report": (st.tuples(records("zed_report"), records("edits")), lambda a: check_zed_report(*a), 1),
        "zed_file": (st.one_of(records("zed_md").map(lambda r: (r, True)), records("zed_json").map(lambda r: (r, False))),
                     lambda a: check_zed_file(*a), 1),
        "safety": (records("settled"), check_safety, 2),
    }


def run_hypothesis(name: str, strategy: st.SearchStrategy[Any], prop: Callable[..., None], n: int) -> Tally:
    tally = Tally()
    seen: set[str] = set()

    @settings(max_examples=n, deadline=None, database=None, derandomize=False, report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case: Any) -> None:
        tally.tried += 1
        try:
            prop(case)
        except Exception as exc:  # noqa: BLE001 - every escape is a finding
            sig = f"{type(exc).__name__}: {str(exc)[:160]}"
            if sig not in seen:
                seen.add(sig)
                tally.failures.append(f"{sig}\n    input: {repr(case)[:300]}\n    at: "
                                      + "".join(traceback.format_tb(exc.__traceback__)[-2:]).strip()[-400:])

    start = time.perf_counter()
    run()
    tally.seconds = time.perf_counter() - start
    return tally


# -- atheris (coverage-guided), one entry point per child process --------------------------------

ATHERIS_TARGETS = ("edits", "kept", "models", "ingest_body", "zed_report", "zed_file", "safety")


def atheris_child(name: str, runs: int) -> None:
    import atheris

    counter = {"n": 0}

    def one(data: bytes) -> None:
        counter["n"] += 1
        fdp = atheris.FuzzedDataProvider(data)
        if name == "edits":
            check_edits([(None, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 400))) for _ in range(fdp.ConsumeIntInRange(1, 4))])
        elif name == "kept":
            check_kept(data)
        elif name == "models":
            check_models(data)
        elif name == "ingest_body":
            header = [None, "gzip", "zstd", "identity"][fdp.ConsumeIntInRange(0, 3)]
            check_ingest_body(fdp.ConsumeBytes(10_000), header)
        elif name == "zed_report":
            check_zed_report(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2000)), fdp.ConsumeBytes(2000))
        elif name == "zed_file":
            check_zed_file(fdp.ConsumeBytes(4000), fdp.ConsumeBool())
        elif name == "safety":
            check_safety(data)

    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    kind = {"edits": "edits", "kept": "scored", "models": "models", "ingest_body": "edits", "zed_report": "zed_report",
            "zed_file": "zed_md", "safety": "settled"}[name]
    for i, s in enumerate(seeds(kind)[:50]):
        (corpus / f"seed{i}").write_bytes(s)
    for s in seeds(kind)[:5]:  # imports what the target runs, so instrument_all sees it
        one(s)
    atheris.instrument_all()  # coverage of every loaded Python function (msgspec's C is not instrumented)
    atheris.Setup([sys.argv[0], f"-runs={runs}", "-max_len=4096", "-print_final_stats=0", str(corpus)], one)
    atheris.Fuzz()


def run_atheris(name: str, runs: int, timeout_s: float) -> Tally:
    tally = Tally()
    start = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, __file__, "--atheris-child", name, "--runs", str(runs)], check=False,
                             capture_output=True, text=True, timeout=timeout_s)
        text = out.stdout + out.stderr
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode() + (exc.stderr or b"").decode() if isinstance(exc.stdout, bytes) else str(exc.stdout or "")
        out = None
    tally.seconds = time.perf_counter() - start
    for line in text.splitlines():
        if line.startswith("Done ") and " runs in " in line:  # libFuzzer's last line
            tally.tried = int(line.split()[1])
        elif line.startswith("#") and "\t" in line and line[1:].split("\t")[0].isdigit():
            tally.tried = max(tally.tried, int(line[1:].split("\t")[0]))
    if out is not None and out.returncode != 0:
        tally.failures.append(text[-3000:])
    return tally


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=2000, help="hypothesis inputs per cheap entry point "
                    "(the scorer and the CLI get a tenth)")
    ap.add_argument("--only", nargs="*", help="entry points to run (default: all)")
    ap.add_argument("--atheris", action="store_true", help="also run atheris on the byte-level entry points")
    ap.add_argument("--runs", type=int, default=20000, help="atheris runs per entry point")
    ap.add_argument("--atheris-timeout", type=float, default=300.0)
    ap.add_argument("--atheris-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.atheris_child:
        atheris_child(args.atheris_child, args.runs)
        return 0

    rows: list[tuple[str, str, Tally]] = []
    for name, (strategy, prop, cost) in entry_points().items():
        if args.only and name not in args.only:
            continue
        n = max(10, args.examples // cost)
        tally = run_hypothesis(name, strategy, prop, n)
        rows.append((name, "hypothesis", tally))
        print(f"{name:12} hypothesis {tally.tried:8d} inputs {len(tally.failures):3d} failures {tally.seconds:7.1f} s",
              flush=True)
    if args.atheris:
        try:
            import atheris  # noqa: F401
        except ImportError:
            print("atheris is not installed (pip install atheris): coverage-guided runs skipped")
        else:
            for name in ATHERIS_TARGETS:
                if args.only and name not in args.only:
                    continue
                tally = run_atheris(name, args.runs, args.atheris_timeout)
                rows.append((name, "atheris", tally))
                print(f"{name:12} atheris    {tally.tried:8d} inputs {len(tally.failures):3d} failures "
                      f"{tally.seconds:7.1f} s", flush=True)
    print()
    print(f"{'entry point':12} {'engine':10} {'inputs':>8} {'failures':>8}")
    for name, engine, tally in rows:
        print(f"{name:12} {engine:10} {tally.tried:8d} {len(tally.failures):8d}")
    total = sum(t.tried for _, _, t in rows)
    failed = sum(len(t.failures) for _, _, t in rows)
    print(f"{'total':12} {'':10} {total:8d} {failed:8d}")
    for name, engine, tally in rows:
        for f in tally.failures:
            print(f"\n[{name} / {engine}] {f}")
    return 1 if failed else 0


sys.path.insert(0, str(Path(__file__).resolve().parent))
if __name__ == "__main__":
    sys.exit(main())
