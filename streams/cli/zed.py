"""Zed's edit-prediction example files in and out: `settle import-zed`, `settle export-zed` (no broker)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from settle.schemas.jsonl import read_lines
from settle.streams.cli.common import app, err, existing_file, fail, refuse_overwrite, settings_from

_UNSAFE = set(' :~^?*[\\@{/<>|"')


def zed_filename(name: str) -> str:
    """Zed's sanitised example file name."""
    return "".join("-" if c in _UNSAFE else c for c in name)


@app.command("import-zed")
def import_zed(
    files: Annotated[list[Path], typer.Argument(help="Zed example files: .md specs, .json, .jsonl")],
    out: Annotated[Path, typer.Option("--out", "-o", help="settled examples as JSONL ('-' = stdout)")] = Path("-"),
    strict: Annotated[bool, typer.Option(help="stop at the first example that cannot be imported (exit 2)")] = False,
) -> None:
    """Import Zed `edit_prediction_cli` examples as settled candidates (score them with `settle score`)."""
    from settle.schemas.jsonl import write_records
    from settle.streams.formats.zed_examples import ZedFormatError, parse_json, parse_markdown, to_settled
    from settle.streams.settling.safety import Safety

    safety = Safety(settings_from().safety)

    refuse_overwrite(out, *files)
    examples = []
    problems = 0
    for file in files:
        existing_file(file)
        suffix = file.suffix.lower()
        if suffix not in (".md", ".json", ".jsonl"):
            raise fail(f"{file}: expected a .md, .json or .jsonl Zed example file")
        if suffix == ".jsonl":
            items = [(f"{file}:{n}", lambda raw=raw: parse_json(raw)) for n, raw in read_lines(file)]
        else:
            text = file.read_text(encoding="utf-8")
            parse = parse_markdown if suffix == ".md" else parse_json
            items = [(str(file), lambda text=text, parse=parse: parse(text))]
        for where, load in items:
            try:
                zed = load()
                if not zed.name:
                    zed.name = file.stem if suffix != ".jsonl" else f"{file.stem}-{where.rsplit(':', 1)[1]}"
                safe = safety.apply(to_settled(zed))  # excluded files, secrets, caps, as before `settled`
                if safe is not None:
                    examples.append(safe)
            except ZedFormatError as exc:
                if strict:
                    raise fail(f"{where}: {exc}") from None
                err.print(f"{where}: skipped: {exc}", markup=False)
                problems += 1
    n = write_records(examples, sys.stdout.buffer if str(out) == "-" else out)
    err.print(f"imported {n} example(s) as settled candidates, {problems} skipped; safety dropped "
              f"{dict(safety.dropped)}, scrubbed {dict(safety.scrubbed)}", markup=False)


@app.command("export-zed")
def export_zed(
    file: Annotated[Path, typer.Argument(help="kept/scored or settled examples as JSONL (e.g. `settle tail kept`)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="a directory (one .md per example) or a .jsonl file")],
    repository_url: Annotated[str, typer.Option(help="front matter repository_url (Zed checks this repo out)")] = "",
    revision: Annotated[str, typer.Option(help="front matter revision")] = "",
    all_decisions: Annotated[bool, typer.Option(help="scored input: export every decision, not only `keep`")] = False,
) -> None:
    """Export kept examples in Zed's example formats (.md specs in a directory, or one JSONL file)."""
    import msgspec

    from settle.schemas.codecs import decode
    from settle.schemas.examples import SettledExample
    from settle.schemas.scored import ScoredExample
    from settle.streams.formats.zed_examples import from_settled, to_json, to_markdown

    existing_file(file)
    refuse_overwrite(out, file)
    zeds = []
    for lineno, raw in read_lines(file):
        try:
            obj = decode(raw, object, "json")  # the shared classifier's reason when unreadable
            if isinstance(obj, dict) and "decision" in obj:
                scored = decode(raw, ScoredExample)
                if scored.decision.decision != "keep" and not all_decisions:
                    continue
                example = scored.example
                tags = ["settle", f"decision:{scored.decision.decision}", f"model:{scored.model_version}"]
            else:
                example = decode(raw, SettledExample)
                tags = ["settle"]
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            err.print(f"{file}:{lineno}: not a scored or settled example: {exc}", markup=False)
            continue
        zeds.append(from_settled(example, repository_url=repository_url, revision=revision, tags=tags))
    if out.suffix.lower() == ".jsonl":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"".join(to_json(z) + b"\n" for z in zeds))
    else:
        out.mkdir(parents=True, exist_ok=True)
        for z in zeds:
            (out / f"{zed_filename(z.name)}.md").write_text(to_markdown(z), encoding="utf-8")
    err.print(f"exported {len(zeds)} example(s) to {out}", markup=False)
