"""trainer/data stays pure except its one Kafka module: only kept_topic imports aiokafka."""

from __future__ import annotations

import ast
from pathlib import Path

import settle.trainer.data as data_pkg

KAFKA = {"aiokafka", "faust", "kafka", "confluent_kafka"}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_kept_topic_imports_a_kafka_client() -> None:
    modules = sorted(Path(data_pkg.__path__[0]).glob("*.py"))
    assert any(m.name == "kept_topic.py" for m in modules)
    kafka_users = {m.name for m in modules if _imported_roots(m) & KAFKA}
    assert kafka_users == {"kept_topic.py"}
