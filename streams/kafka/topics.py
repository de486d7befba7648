"""Create settle's topics explicitly.

Faust does not create source topics, and the embedded broker would auto-create
them with its own partition count (which breaks co-partitioning), so every
topic is created up front with the configured partitions and explicit configs.
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from settle.streams.kafka.security import client_kwargs
from settle.streams.settings import ALL_TOPICS, CHECKPOINTS, DEAD_LETTER, MODELS, Settings

#: the settle agent reads only each partition's latest checkpoint (streams/kafka/checkpoints.py)
CHECKPOINT_RETENTION_MS = 24 * 3_600_000

#: explicit configs: the embedded broker reports none for topics created without them
TOPIC_CONFIGS = {"cleanup.policy": "delete", "retention.ms": "-1"}


def topic_configs(settings: Settings, name: str) -> dict[str, str]:
    """A topic's configs; `dead-letter` keeps its raw bytes only ``dead_letter_retention_ms`` (README: dead letters)."""
    configs = dict(TOPIC_CONFIGS)
    if name == DEAD_LETTER:
        configs["retention.ms"] = str(settings.dead_letter_retention_ms)
    elif name == CHECKPOINTS:
        configs["retention.ms"] = str(CHECKPOINT_RETENTION_MS)
    return configs


async def ensure_topics(settings: Settings, names: tuple[str, ...] = ALL_TOPICS) -> list[str]:
    """Create missing topics; returns the full names that were created."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=10_000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=settings.topic(n),
                num_partitions=1 if n == MODELS else settings.partitions,
                replication_factor=1,
                topic_configs=topic_configs(settings, n),
            )
            for n in names
            if settings.topic(n) not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in wanted]
    finally:
        try:
            await admin.close()
        except Exception:  # never started: nothing to close
            pass


def ensure_topics_sync(settings: Settings, names: tuple[str, ...] = ALL_TOPICS) -> list[str]:
    return asyncio.run(ensure_topics(settings, names))
