"""`settle import-zed` / `settle export-zed` on hand-written Zed examples, and an imported example scored."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

from typer.testing import CliRunner

from settle.streams.cli import app
from settle.streams.formats.zed_examples import parse_json, parse_markdown

# The hand-written examples live with the format tests (tests are not a package: load by path).
_SAMPLES = runpy.run_path(str(Path(__file__).resolve().parents[1] / "formats" / "test_zed_examples.py"))
JSONL_LINE, PY_EXAMPLE, RS_EXAMPLE = _SAMPLES["JSONL_LINE"], _SAMPLES["PY_EXAMPLE"], _SAMPLES["RS_EXAMPLE"]

runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_import_score_export_round_trip(tmp_path: Path, bootstrapped_student: Path) -> None:
    (tmp_path / "shop--finish-rename.md").write_text(PY_EXAMPLE)
    (tmp_path / "engine.md").write_text(RS_EXAMPLE)
    (tmp_path / "more.jsonl").write_bytes(JSONL_LINE + b"\n" + b'{"name": "broken"}\n')
    settled = tmp_path / "settled.jsonl"
    code, _, err = _run("import-zed", str(tmp_path / "shop--finish-rename.md"), str(tmp_path / "engine.md"),
                        str(tmp_path / "more.jsonl"), "-o", str(settled))
    assert code == 0, err
    assert "imported 3 example(s)" in err and "more.jsonl:2: skipped" in err
    lines = [json.loads(x) for x in settled.read_text().splitlines()]
    assert [x["request_id"] for x in lines] == ["shop--finish-rename", "engine--add-field", "ui--close-paren"]

    # An imported example goes through the offline scorer like any settled example.
    code, out, err = _run("score", str(settled), "--model", str(bootstrapped_student), "--k", "2",
                          "--max-new-tokens", "24", "--mode", "median", "--keep-min", "0", "--keep-max", "1e9")
    assert code == 0, err
    scored = [json.loads(x) for x in out.splitlines()]
    assert [s["id"] for s in scored] == [x["id"] for x in lines]
    assert all(s["decision"]["decision"] in ("keep", "too_easy", "too_hard", "unchanged", "invalid") for s in scored)
    assert any(s["samples"] for s in scored), "the imported examples were sampled"
    kept = [s for s in scored if s["decision"]["decision"] == "keep"]
    assert kept
    (tmp_path / "kept.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scored))

    # Export the kept ones in both of Zed's formats; Zed's own names, repositories and revisions come back.
    code, _, err = _run("export-zed", str(tmp_path / "kept.jsonl"), "-o", str(tmp_path / "zed"))
    assert code == 0, err
    files = sorted((tmp_path / "zed").glob("*.md"))
    assert len(files) == len(kept)
    by_name = {parse_markdown(f.read_text()).name: parse_markdown(f.read_text()) for f in files}
    if "shop--finish-rename" in by_name:
        ex = by_name["shop--finish-rename"]
        assert ex.repository_url == "https://github.com/example/shop" and ex.revision.startswith("0123")
    code, _, err = _run("export-zed", str(tmp_path / "kept.jsonl"), "-o", str(tmp_path / "all.jsonl"),
                        "--all-decisions")
    assert code == 0, err
    exported = [parse_json(x) for x in (tmp_path / "all.jsonl").read_bytes().splitlines()]
    assert [e.name for e in exported] == ["shop--finish-rename", "engine--add-field", "ui--close-paren"]
    # ...and importing the export gives back the same edits.
    (tmp_path / "back.jsonl").write_bytes((tmp_path / "all.jsonl").read_bytes())
    code, out, err = _run("import-zed", str(tmp_path / "back.jsonl"))
    assert code == 0, err
    again = [json.loads(x) for x in out.splitlines()]
    for a, b in zip(lines, again):
        assert a["settled_text"].strip("\n") in b["settled_text"] and a["original_text"].strip("\n") in b["original_text"]


def test_bad_input_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    code, _, err = _run("import-zed", str(tmp_path / "x.txt"))
    assert code == 2 and "expected a .md, .json or .jsonl" in err
    (tmp_path / "bad.md").write_text("# nothing\n")
    code, _, err = _run("import-zed", str(tmp_path / "bad.md"), "--strict")
    assert code == 2 and "cursor position" in err
