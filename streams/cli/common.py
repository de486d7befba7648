"""What every command shares: the Typer app, one-line errors, settings, Kafka errors, input files.

Errors are one greppable line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from settle.schemas.codecs import decode_settled
from settle.schemas.examples import SettledExample
from settle.schemas.jsonl import read_lines
from settle.streams.settings import SettingError, Settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="settle: mine settled edit-prediction training data from editor telemetry (see README.md).",
)
err = Console(stderr=True, soft_wrap=True)  # one error, one line: greppable
T = TypeVar("T")

BootstrapOpt = Annotated[
    Optional[str], typer.Option("--bootstrap", "-b", help="Kafka bootstrap host:port [env SETTLE_BOOTSTRAP]")
]
PrefixOpt = Annotated[Optional[str], typer.Option(help="topic name prefix [env SETTLE_TOPIC_PREFIX]")]
PartitionsOpt = Annotated[Optional[int], typer.Option(min=1, help="partitions per topic [env SETTLE_PARTITIONS]")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; raise the returned Exit."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def settings_from(**overrides: object) -> Settings:
    """Settings from SETTLE_* variables plus CLI overrides (None = not given)."""
    try:
        return Settings.from_env(**overrides)
    except SettingError as exc:  # names its variable: SETTLE_MAX_PER_SESSION=-1: must be >= 0
        raise fail(str(exc)) from None
    except (ValueError, TypeError) as exc:
        raise fail(f"bad SETTLE_* environment setting: {exc}") from None


def existing_file(path: Path) -> Path:
    if str(path) != "-" and not path.is_file():
        raise fail(f"{path}: no such file")
    return path


def refuse_overwrite(out: Path, *inputs: Path) -> None:
    """Fail when the output path is one of the inputs: a command never destroys what it reads."""
    if str(out) == "-":
        return
    target = out.resolve()
    for source in inputs:
        if str(source) != "-" and source.resolve() == target:
            raise fail(f"{out} is also an input: write the output somewhere else")


def read_settled(file: Path) -> list[SettledExample]:
    """Settled examples of a JSONL file; a bad line is reported with its number and skipped."""
    import msgspec

    examples = []
    for lineno, raw in read_lines(file):
        try:
            examples.append(decode_settled(raw))
        except msgspec.DecodeError as exc:
            err.print(f"{file}:{lineno}: not a settled example: {exc}", markup=False)
    return examples


def kafka_call(fn: Callable[[], T], s: Settings) -> T:
    """Run fn, turning 'broker unreachable' into a one-line error instead of a traceback."""
    import logging

    from aiokafka.errors import KafkaConnectionError, KafkaError

    from settle.streams.kafka.io import MissingTopic

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the one-line error below says it
    try:
        return fn()
    except KafkaConnectionError:
        raise fail(f"cannot reach a Kafka broker at {s.bootstrap} (start one with `settle broker`)") from None
    except KafkaError as exc:
        raise fail(f"Kafka error talking to {s.bootstrap}: {exc}") from None
    except MissingTopic as exc:
        raise fail(str(exc)) from None
