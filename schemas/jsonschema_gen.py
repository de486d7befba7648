"""JSON Schema files for producers and consumers written in other languages.

The Structs are the source of truth; ``python -m settle.schemas.jsonschema_gen``
rewrites the files and a test fails when they drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from .events import Event
from .examples import DeadLetter, SettledExample
from .models import ModelPublished
from .scored import ScoredExample

SCHEMA_DIR = Path(__file__).parent / "jsonschema"

#: file name -> the type it describes
DOCUMENTS: dict[str, Any] = {
    "event.json": Event,
    "settled_example.json": SettledExample,
    "dead_letter.json": DeadLetter,
    "scored_example.json": ScoredExample,
    "model_published.json": ModelPublished,
}


def render(type_: Any) -> str:
    return json.dumps(msgspec.json.schema(type_), indent=2, sort_keys=True) + "\n"


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, type_ in DOCUMENTS.items():
        path = directory / name
        path.write_text(render(type_))
        paths.append(path)
    return paths


def meaning(document: Any) -> Any:
    """A schema with prose whitespace collapsed: what a schema says, not how a library lays out docstrings.

    msgspec 0.23 strips docstring indentation that older releases kept; that must not count as drift.
    """
    if isinstance(document, dict):
        return {k: " ".join(v.split()) if k in ("description", "title") and isinstance(v, str) else meaning(v)
                for k, v in document.items()}
    if isinstance(document, list):
        return [meaning(v) for v in document]
    return document


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of files that are missing or say something other than the Structs."""
    out = []
    for name, type_ in DOCUMENTS.items():
        path = directory / name
        if not path.exists() or meaning(json.loads(path.read_text())) != meaning(json.loads(render(type_))):
            out.append(name)
    return out


if __name__ == "__main__":
    for p in write(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(p)
