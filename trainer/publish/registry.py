"""Model versions on disk and their announcements on `models`.

A version is a directory (weights, tokenizer, ONNX export, metrics, the data
offsets it was trained on) under ``<root>/<name>/<version>``; the `models`
topic is the source of truth for which versions went live, so every scorer
and the next trainer run agree on "the current model" without shared state
beyond the broker and the directory.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaProducer

from settle.schemas.codecs import InvalidRecord, decode_model, encode
from settle.schemas.models import ModelPublished
from settle.streams.contracts.student_dir import write_manifest
from settle.streams.kafka.io import read_topic
from settle.streams.kafka.security import client_kwargs
from settle.streams.settings import MODELS, Settings

_VERSION = re.compile(r"^v(\d{4,})$")


def next_version(root: Path, name: str) -> str:
    """v0001, v0002, ...: one more than any version directory (published or rejected)."""
    taken = [int(m.group(1)) for p in (root / name).glob("v*") if (m := _VERSION.match(p.name))]
    return f"v{max(taken, default=0) + 1:04d}"


def stage(root: Path, name: str, version: str, hf_dir: Path, onnx_dir: Path) -> Path:
    """Copy a candidate into its version directory: HF weights under hf/, the serving files at the top."""
    dest = root / name / version
    if dest.exists():
        raise FileExistsError(f"{dest} exists: versions are immutable")
    shutil.copytree(hf_dir, dest / "hf")
    for f in onnx_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, dest / f.name)
    write_manifest(dest, name, version)
    return dest


def record(dest: Path, message: ModelPublished) -> None:
    (dest / "model.json").write_bytes(msgspec.json.format(encode(message)) + b"\n")


async def announce(settings: Settings, message: ModelPublished) -> None:
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    try:
        await producer.start()
        await producer.send_and_wait(settings.topic(MODELS), key=message.name.encode(), value=encode(message))
    finally:
        await producer.stop()


async def history(settings: Settings, idle_s: float = 1.0) -> list[ModelPublished]:
    """Every verdict on `models`, oldest first (one partition, so in order)."""
    records = await read_topic(settings, MODELS, idle_s=idle_s)
    out = []
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        try:
            out.append(decode_model(r.value))
        except InvalidRecord:
            continue  # not ours to judge here; the scorer dead-letters it
    return out


def latest_published(messages: list[ModelPublished], name: str | None = None) -> ModelPublished | None:
    live = [m for m in messages if m.status == "published" and (name is None or m.name == name)]
    return live[-1] if live else None


def now_ms() -> int:
    return int(time.time() * 1000)
