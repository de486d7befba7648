"""Every `settle` entry point answers bad input with a clear error, not a traceback."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from settle.streams.cli import app

runner = CliRunner()
UNREACHABLE = "127.0.0.1:1"
ROOT = Path(__file__).resolve().parents[4]

GOOD = [
    '{"v":1,"kind":"prediction_requested","time_ms":1000,"session_id":"s","path":"a.py","consent":true,'
    '"encoding":"utf-8","request_id":"r1","region":{"start":0,"end":3},"region_text":"abc","cursor":1}',
    '{"v":1,"kind":"buffer_edited","time_ms":2000,"session_id":"s","path":"a.py","consent":true,'
    '"encoding":"utf-8","replacements":[{"start":1,"end":2,"text":"XY"}]}',
]


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_settle_offline_prints_examples_and_reports_bad_lines(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join([GOOD[0], "{oops", "", GOOD[1], '{"v":3,"kind":"tick","time_ms":1}']) + "\n")
    code, out, err = _run("reference", str(f), "--flush")
    assert code == 0
    (example,) = [json.loads(line) for line in out.splitlines()]
    assert example["settled_text"] == "aXYc"
    assert f"{f}:2: malformed" in err and f"{f}:5: unsupported_version" in err
    assert "2 invalid line(s)" in err


def test_settle_offline_strict_stops_at_first_bad_line(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join([GOOD[0], "[1,2]", GOOD[1]]) + "\n")
    code, out, err = _run("reference", str(f), "--strict")
    assert code == 2 and out == "" and ":2: not_an_object" in err


def test_settle_offline_without_flush_keeps_quiet_regions_open(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(GOOD) + "\n")
    code, out, err = _run("reference", str(f))
    assert code == 0 and out == "" and "1 still open" in err


@pytest.mark.parametrize("command", [["reference"], ["produce"], ["score", "--model", "nowhere"]])
def test_missing_input_file(command: list[str], tmp_path: Path) -> None:
    code, _, err = _run(*command[:1], str(tmp_path / "missing.jsonl"), *command[1:])
    assert code == 2 and "no such file" in err


@pytest.mark.parametrize(
    "args",
    [
        ["produce", "{file}", "-b", UNREACHABLE],
        ["tail", "settled", "-b", UNREACHABLE],
        ["topics", "-b", UNREACHABLE],
        ["worker", "-b", UNREACHABLE],
    ],
)
def test_unreachable_broker_is_one_clear_line(args: list[str], tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(GOOD[0] + "\n")
    code, _, err = _run(*[a.replace("{file}", str(f)) for a in args])
    assert code == 2 and "cannot reach a Kafka broker at 127.0.0.1:1" in err


def test_simulate_rejects_bad_options(tmp_path: Path) -> None:
    code, _, err = _run("simulate", "--start", "yesterday")
    assert code == 2 and "--start must be" in err
    code, _, err = _run("simulate", "--source-dir", str(tmp_path / "nope"))
    assert code == 2 and "not a directory" in err
    code, _, err = _run("simulate", "--sessions", "0")
    assert code == 2


def test_simulate_writes_decodable_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    code, _, err = _run("simulate", "-o", str(out), "--sessions", "2", "--seed", "3")
    assert code == 0 and "wrote" in err
    code, stdout, _ = _run("reference", str(out))
    assert code == 0 and stdout.strip()


def test_broker_refuses_a_port_in_use() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        code, _, err = _run("broker", "--port", str(s.getsockname()[1]))
    assert code == 2 and "already in use" in err


def test_bad_environment_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SETTLE_PARTITIONS", "many")
    f = tmp_path / "t.jsonl"
    f.write_text(GOOD[0] + "\n")
    code, _, err = _run("produce", str(f))
    assert code == 2 and "SETTLE_PARTITIONS='many': not an integer" in err
    monkeypatch.delenv("SETTLE_PARTITIONS")
    monkeypatch.setenv("SETTLE_MAX_PER_SESSION", "-1")  # was accepted
    code, _, err = _run("produce", str(f))
    assert code == 2 and "SETTLE_MAX_PER_SESSION=-1: must be >= 0" in err
    monkeypatch.delenv("SETTLE_MAX_PER_SESSION")
    monkeypatch.setenv("SETTLE_INGEST_TOKENS", "vim:tok")
    monkeypatch.setenv("SETTLE_INGEST_MAX_VALUES", "-1")  # was accepted
    code, _, err = _run("ingest", "-b", UNREACHABLE)
    assert code == 2 and "SETTLE_INGEST_MAX_VALUES=-1: must be >= 1" in err


def test_status_with_no_broker_says_so_instead_of_serving_an_empty_page() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = _run("status", "--port", str(port), "-b", UNREACHABLE)
    assert code == 2 and "error: cannot reach a Kafka broker at 127.0.0.1:1" in err


def test_tail_refuses_an_unknown_topic() -> None:
    code, out, err = _run("tail", "nosuchtopic", "-b", UNREACHABLE)  # was: "0 record(s)", exit 0
    assert code == 2 and out == "" and "error: unknown topic 'nosuchtopic': one of edits, settled" in err


def test_train_rejects_bad_options(tmp_path: Path) -> None:
    code, _, err = _run("train", "--every", "soon", "-b", UNREACHABLE)
    assert code == 2 and "--every must look like" in err
    code, _, err = _run("train", "--bootstrap-model", str(tmp_path), "-b", UNREACHABLE)
    assert code == 2 and "not an exported student" in err


def test_student_refuses_unknown_shape_and_non_empty_dir(tmp_path: Path) -> None:
    code, _, err = _run("student", "-o", str(tmp_path / "s"), "--shape", "huge")
    assert code == 2 and "--shape must be one of" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, _, err = _run("student", "-o", str(tmp_path / "full"))
    assert code == 2 and "not empty" in err


def test_score_rejects_bad_policy_and_bad_lines(tmp_path: Path, student_dir: Path) -> None:
    settled = tmp_path / "settled.jsonl"
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(GOOD) + "\n")
    code, out, _ = _run("reference", str(f), "--flush")
    settled.write_bytes(out.encode() + b"{not an example}\n\xef\xbb\xbf" + out.encode())
    bad_policy = tmp_path / "policy.json"
    bad_policy.write_text('{"k": 0}')
    code, _, err = _run("score", str(settled), "--model", str(student_dir), "--policy", str(bad_policy))
    assert code == 2 and "bad band policy" in err
    bad_policy.write_bytes(b'\xef\xbb\xbf{"k": 2}')
    code, _, err = _run("score", str(settled), "--model", str(student_dir), "--policy", str(bad_policy))
    assert code == 2 and "bad band policy: byte_order_mark" in err
    code, _, err = _run("score", str(settled), "--model", str(student_dir), "--keep-min", "0.9", "--keep-max", "0.1")
    assert code == 2 and "bad band policy" in err
    code, _, err = _run("score", str(settled), "--model", str(student_dir), "--top-k", "-1")
    assert code == 2 and "--top-k must be >= 0" in err
    code, _, err = _run("score", str(settled), "--model", str(student_dir), "--top-p", "0")
    assert code == 2 and "--top-p must be in (0, 1]" in err
    code, out, err = _run("score", str(settled), "--model", str(student_dir), "--k", "2", "--max-new-tokens", "4",
                          "--top-k", "7")
    assert code == 0 and ":2: not a settled example: malformed" in err
    assert ":3: not a settled example: byte_order_mark" in err  # was "Expected `object`, got `int`"
    (scored,) = [json.loads(line) for line in out.splitlines()]
    assert scored["decision"]["policy"]["k"] == 2 and scored["model_version"].startswith("sha-")
    assert scored["top_k"] == 7
    old = tmp_path / "old-export"
    shutil.copytree(student_dir, old)
    info = json.loads((old / "onnx_config.json").read_text())
    (old / "onnx_config.json").write_text(json.dumps({**info, "graph": "flat-cache"}))
    code, _, err = _run("score", str(settled), "--model", str(old))
    assert code == 2 and "re-export" in err


def test_calibrate_writes_a_policy_the_scorer_accepts(
    tmp_path: Path, bootstrapped_student: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from settle.schemas.codecs import encode as enc
    from settle.streams.settling.reference import settle_records
    from settle.streams.simulate import SimulationConfig, simulate
    from settle.trainer.student.bootstrap import BootstrapRecipe, artifact_name

    examples = settle_records(enumerate(enc(e) for e in simulate(SimulationConfig(sessions=3, seed=4)))).examples
    settled = tmp_path / "settled.jsonl"
    settled.write_bytes(b"".join(enc(e) + b"\n" for e in examples))
    policy = tmp_path / "policy.json"
    # no --model: the bootstrap student, as `settle score` (it required --model); found in var/cache, where
    # bootstrap_student unpacks it, here the session's already-trained one
    cache = tmp_path / "var" / "cache"
    cache.mkdir(parents=True)
    (cache / artifact_name(BootstrapRecipe())).symlink_to(bootstrapped_student, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    code, _, err = _run("calibrate", str(settled), "--k", "2", "--max-new-tokens", "48", "-o", str(policy))
    assert code == 0 and "no --model given: calibrating with the bootstrap student" in err, err
    written = json.loads(policy.read_text())
    assert written["mode"] == "median" and written["keep_min_median"] <= written["keep_max_median"]
    code, _, err = _run("score", str(settled), "--model", str(bootstrapped_student), "--policy", str(policy),
                        "--max-new-tokens", "8")
    assert code == 0, err


def test_calibrate_refuses_a_student_that_never_parses(tmp_path: Path, student_dir: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(GOOD) + "\n")
    code, out, _ = _run("reference", str(f), "--flush")
    settled = tmp_path / "settled.jsonl"
    settled.write_text(out)
    code, _, err = _run("calibrate", str(settled), "--model", str(student_dir), "--k", "2", "--max-new-tokens", "4")
    assert code == 2 and "at least 2 finite medians" in err


def _settle(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """The real `settle` entry point (its last-resort guard lives in main(), which CliRunner bypasses)."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "settle.streams.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)
    return done.returncode, done.stderr


def test_paths_ports_and_settings_no_command_checks_are_still_one_error_line(tmp_path: Path) -> None:
    """A directory as output, an out-of-range setting, a port in use: `error:` and exit 2, never a traceback."""
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(GOOD) + "\n")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cases = [
        (["simulate", "--sessions", "1", "-o", str(tmp_path)], None),
        (["reference", str(f)], {"SETTLE_BOUNDARY": "weird"}),
        (["topics", "-b", "127.0.0.1:notaport"], None),
        (["status", "--port", str(busy.getsockname()[1]), "-b", UNREACHABLE], None),
    ]
    try:
        for args, env in cases:
            code, err = _settle(*args, env=env)
            assert code == 2 and "Traceback" not in err and "error:" in err, (args, err[-2000:])
    finally:
        busy.close()


def test_an_output_that_is_an_input_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "kept.jsonl"
    f.write_text("")
    code, _, err = _run("export-zed", str(f), "-o", str(f))
    assert code == 2 and "is also an input" in err
    code, _, err = _run("import-zed", str(f), "-o", str(f))
    assert code == 2 and "is also an input" in err


def test_simulate_git_refuses_an_option_as_a_revision(tmp_path: Path) -> None:
    code, _, err = _run("simulate", "--git", str(ROOT), "--rev", f"--output={tmp_path / 'pwn'}")
    assert code == 2 and "not an option" in err and not (tmp_path / "pwn").exists()


def test_replay_refuses_a_span_that_ends_before_it_starts() -> None:
    code, _, err = _run("replay", "edits", "-o", "new.", "-b", UNREACHABLE, "--from-offsets", "0:10",
                        "--to-offsets", "0:5")
    assert code == 2 and "bad span" in err
