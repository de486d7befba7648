"""Every decoder and entry point under hypothesis: no exception escapes, every bad record has a reason.

The properties and input strategies live in bench/fuzz.py (which runs them for many more
inputs, and under atheris); here each runs for a small count so the suite stays quick.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _fuzz() -> Any:
    name = "settle_bench_fuzz"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "fuzz.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


#: inputs per entry point here (bench/fuzz.py defaults to 2,000)
COUNTS = {"edits": 150, "edits_stream": 150, "settled": 12, "settled_text": 12, "prompt": 150, "kept": 150, "models": 150, "jsonl": 15, "ingest_body": 150,
          "zed_report": 150, "zed_file": 150, "safety": 60}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_entry_point_survives_fuzzing(name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    fuzz = _fuzz()
    if name in ("settled", "settled_text"):
        # the real tiny student (the session fixture), as the scorer would load it
        monkeypatch.setenv("SETTLE_FUZZ_STUDENT", str(request.getfixturevalue("student_dir")))
        fuzz.FuzzSource._source = None
    strategy, prop, _ = fuzz.entry_points()[name]
    tally = fuzz.run_hypothesis(name, strategy, prop, COUNTS[name])
    assert tally.tried >= COUNTS[name] // 2
    assert not tally.failures, "\n\n".join(tally.failures)


def test_a_bad_edits_record_is_dead_lettered_with_its_reason() -> None:
    fuzz = _fuzz()
    # the property itself must catch a record that is not dead-lettered: feed it one it cannot read
    fuzz.check_edits([(b"s1\x1fa.py", b"{not json"), (None, b"\xef\xbb\xbf{}"), (None, None), (None, b"[1]")])
    fuzz.check_jsonl([b"{not json", b"[]", b'{"kind": "tick", "v": 1, "time_ms": 5}'])
    fuzz.check_jsonl([b"{not json"], strict=True)
