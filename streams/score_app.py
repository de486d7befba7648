"""The scoring agent: `settled` in batches, every decision to `scored`, keepers to `kept`.

Sampling is CPU/GPU-bound and would starve the event loop (and with it the
consumer's heartbeats), so each batch is scored in a worker thread. Records
are acknowledged only after their outputs are on the broker: a crash re-scores
at most one batch, and scoring is deterministic per example id, model version
and seed, so the repeats are byte-identical and consumers dedupe on id.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import faust
import msgspec
from faust.types import StreamT

from settle.schemas.codecs import decode_settled, encode
from settle.schemas.examples import DeadLetter, SettledExample

from .app import base_app_settings
from .scoring import SampleSource, ScoringConfig, score_batch
from .settings import DEAD_LETTER, KEPT, SCORED, SETTLED, Settings

log = logging.getLogger("settle.scorer")


def create_score_app(settings: Settings, source: SampleSource, config: ScoringConfig) -> faust.App:
    app = faust.App(f"{settings.group_prefix}-score", **base_app_settings(settings, "score"))
    settled = app.topic(settings.topic(SETTLED), partitions=settings.partitions)
    out = {n: app.topic(settings.output_topic(n), partitions=settings.partitions) for n in (SCORED, KEPT, DEAD_LETTER)}
    recent: collections.OrderedDict[str, None] = collections.OrderedDict()

    @app.agent(settled, name="score")
    async def score(stream: StreamT) -> None:
        async for batch in stream.noack_take(settings.score_batch_size, within=settings.batch_within_s):
            examples: list[SettledExample] = []
            deliveries: list[Any] = []
            for event in batch:
                m = event.message
                try:
                    example = decode_settled(m.value or b"")
                except msgspec.DecodeError as exc:
                    letter = DeadLetter(
                        reason="invalid_settled", error=str(exc), source_topic=m.topic,
                        partition=m.partition, offset=m.offset, key=m.key, value=m.value or b"", agent="score",
                    )
                    deliveries.append(await out[DEAD_LETTER].send(key=m.key, value=encode(letter), force=True))
                    continue
                if example.id in recent:
                    continue  # an exact repeat from an upstream restart: already scored here
                recent[example.id] = None
                examples.append(example)
            while len(recent) > 100_000:
                recent.popitem(last=False)
            if examples:
                scored = await asyncio.to_thread(score_batch, examples, source, config)
                for s in scored:
                    key, value = s.id.encode(), encode(s)
                    deliveries.append(await out[SCORED].send(key=key, value=value, force=True))
                    if s.decision.decision == "keep":
                        deliveries.append(await out[KEPT].send(key=key, value=value, force=True))
            if deliveries:
                await asyncio.gather(*deliveries)
            for event in batch:
                await stream.ack(event)

    return app


def run_scorer(settings: Settings, source: SampleSource, config: ScoringConfig, loglevel: str = "warning") -> None:
    from .topics import ensure_topics_sync

    ensure_topics_sync(settings)
    app = create_score_app(settings, source, config)
    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
