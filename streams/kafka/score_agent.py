"""The scoring agent: `settled` in batches, every decision to `scored`, keepers to `kept`.

Sampling is CPU/GPU-bound and would starve the event loop (and with it the
consumer's heartbeats), so each batch is scored in a worker thread. Records
are acknowledged only after their outputs are on the broker: a crash re-scores
at most one batch, and scoring is deterministic per example id, model version
and seed, so the repeats are byte-identical and consumers dedupe on id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import StreamT

from settle.schemas.codecs import InvalidRecord, decode_model
from settle.schemas.models import ModelPublished
from settle.streams.kafka import prometheus as metrics
from settle.streams.kafka.io import produce_dead_letters
from settle.streams.kafka.security import client_kwargs
from settle.streams.kafka.settle_agent import base_app_settings
from settle.streams.records import Consumed, dead_letter
from settle.streams.scoring.batch import BatchScorer
from settle.streams.scoring.score import SampleSource, ScoringConfig
from settle.streams.settings import DEAD_LETTER, KEPT, MODELS, SCORED, SETTLED, Settings

log = logging.getLogger("settle.scorer")

#: how long a batch of `settled` waits to fill up to score_batch_size (the removed
#: Settings.batch_within_s default, which only the scorer still used)
BATCH_WITHIN_S = 0.05


class ModelHolder:
    """The scorer's current student. Read once per batch, so a whole batch is scored
    by one model and a hot reload never drops or double-scores an example."""

    def __init__(self, source: SampleSource, name: str, load: Callable[[Path], SampleSource]) -> None:
        self.source = source
        self.name = name
        self.load = load
        metrics.observe_model_in_use(name, source.model_version)
        self.offset = 0  # next `models` offset to read
        #: dead-letter bad `models` records; every scorer reads all of `models`, so each
        #: reports a bad one (same source offset: dedupe on it)
        self.dead_letters = True

    def apply(self, message: ModelPublished) -> bool:
        """Swap to ``message``'s model when it publishes another version of ours.

        `models` is read in order, so the last published message wins: a newer
        version, or an older one re-published as a rollback.
        """
        if message.name != self.name:
            return False
        metrics.observe_verdict(message)
        if message.status != "published":
            # warning level: an operator watching the scorer sees why the candidate never went live
            log.warning("scorer keeps %s %s: candidate %s %s: %s", message.name, self.source.model_version,
                        message.version, message.status, message.reason)
            return False
        if message.version == self.source.model_version:
            return False
        self.source = self.load(Path(message.location))
        metrics.observe_model_in_use(message.name, message.version)
        # warning level: visible at the workers' default log level, and tests/demo wait on it
        log.warning("scorer now uses %s %s", message.name, message.version)
        return True


async def follow_models(settings: Settings, holder: ModelHolder, *, until_idle: bool, poll_ms: int = 500) -> None:
    """Apply `models` records from ``holder.offset`` on, with one long-lived consumer.

    ``until_idle``: return once nothing more arrives (startup catch-up);
    otherwise follow the topic for as long as the worker runs (hot reload).
    """
    tp = TopicPartition(settings.topic(MODELS), 0)
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    try:
        await consumer.start()
        consumer.assign([tp])
        consumer.seek(tp, holder.offset)
        while True:
            msgs = (await consumer.getmany(tp, timeout_ms=poll_ms)).get(tp, [])
            if not msgs and until_idle:
                return
            for m in msgs:
                holder.offset = m.offset + 1
                await _apply_record(settings, holder, tp.topic, m)
    finally:
        await consumer.stop()


async def _apply_record(settings: Settings, holder: ModelHolder, topic: str, m: Any) -> None:
    try:
        message = decode_model(m.value or b"")
    except InvalidRecord as exc:
        log.warning("undecodable `models` record at offset %d: %s", m.offset, exc)
        if holder.dead_letters:
            source = Consumed(topic, 0, m.offset, m.key, m.value or b"")
            await produce_dead_letters(settings, [dead_letter(source, exc.reason, exc.message, "score-models")])
        return
    try:
        await asyncio.to_thread(holder.apply, message)
    except Exception as exc:  # a broken model directory must not kill the scorer
        log.error("cannot load %s %s from %s: %s", message.name, message.version, message.location, exc)


def create_score_app(settings: Settings, holder: ModelHolder, config: ScoringConfig) -> faust.App:
    app = faust.App(f"{settings.group_prefix}-score", **base_app_settings(settings, "score"))
    settled = app.topic(settings.topic(SETTLED), partitions=settings.partitions)
    out = {n: app.topic(settings.output_topic(n), partitions=settings.partitions) for n in (SCORED, KEPT, DEAD_LETTER)}

    scorer = BatchScorer(config)

    @app.agent(settled, name="score")
    async def score(stream: StreamT) -> None:
        async for batch in stream.noack_take(settings.score_batch_size, within=BATCH_WITHIN_S):
            records = [Consumed(e.message.topic, e.message.partition, e.message.offset, e.message.key,
                                e.message.value or b"") for e in batch]
            started = time.perf_counter()
            result = await asyncio.to_thread(scorer.handle, records, holder.source)
            if result.scored:
                metrics.SCORE_SECONDS.observe(time.perf_counter() - started)
            for s in result.scored:
                metrics.DECISIONS.labels(s.decision.decision, s.model_version).inc()
                metrics.SAMPLES.inc(s.decision.samples_used)
                metrics.observe_scored(s)
            deliveries = [await out[o.topic].send(key=o.key, value=o.value, force=True) for o in result.outputs]
            if deliveries:
                await asyncio.gather(*deliveries)
            for event in batch:
                await stream.ack(event)

    @app.task
    async def reload_models() -> None:
        """Hot reload: swap to each newly published version between batches."""
        await follow_models(settings, holder, until_idle=False)

    return app


def run_scorer(settings: Settings, holder: ModelHolder, config: ScoringConfig, loglevel: str = "warning") -> None:
    from settle.streams.kafka.topics import ensure_topics_sync

    ensure_topics_sync(settings)
    asyncio.run(follow_models(settings, holder, until_idle=True))  # start on the newest published model
    app = create_score_app(settings, holder, config)
    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
