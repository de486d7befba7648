"""`settle status`: the status page, served over HTTP, fed by the topics and the workers' metrics.

Two followers run beside the web server: one reads `scored` from the beginning (keeping
the most recent examples and the decision counts of all), one reads `models`. Each page
request scrapes the given metrics endpoints (workers, scorers) for open regions and lag.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import urllib.request
from dataclasses import dataclass, field

import msgspec
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from settle.schemas.codecs import decode
from settle.schemas.models import ModelPublished
from settle.schemas.scored import ScoredExample
from settle.streams.kafka.io import topic_partitions
from settle.streams.kafka.security import client_kwargs
from settle.streams.settings import MODELS, SCORED, Settings
from settle.streams.status.render import StatusData, page

log = logging.getLogger("settle.status")


@dataclass
class StatusState:
    recent: int = 200
    scored: collections.deque = field(default_factory=collections.deque)
    decisions: collections.Counter = field(default_factory=collections.Counter)
    scored_total: int = 0
    models: list[ModelPublished] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add_scored(self, s: ScoredExample) -> None:
        if s.id in self.seen:
            return  # a re-scored repeat (same id): counted once
        self.seen.add(s.id)
        self.scored_total += 1
        self.decisions[s.decision.decision] += 1
        self.scored.append(s)
        while len(self.scored) > self.recent:
            self.scored.popleft()


async def follow(settings: Settings, topic: str, on_value, poll_ms: int = 500) -> None:
    """Read a topic from the beginning and keep following it (no group: nothing committed)."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    name = settings.topic(topic)
    try:
        await consumer.start()
        tps = [TopicPartition(name, p) for p in await topic_partitions(consumer, name, timeout_s=30)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            for msgs in (await consumer.getmany(timeout_ms=poll_ms, max_records=2000)).values():
                for m in msgs:
                    on_value(m.value or b"")
    finally:
        await consumer.stop()


def scrape(urls: list[str]) -> tuple[dict[str, float], dict[tuple[str, str, str], float], list[str]]:
    """Open regions by partition and lag by (group, topic, partition), summed over the endpoints."""
    open_regions: dict[str, float] = collections.defaultdict(float)
    lag: dict[tuple[str, str, str], float] = {}
    errors = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                text = r.read().decode()
        except OSError as exc:
            errors.append(f"{url}: {exc}")
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "settle_regions_open":
                    open_regions[sample.labels["partition"]] += sample.value
                elif sample.name == "settle_consumer_lag_records":
                    key = (sample.labels["group"], sample.labels["topic"], sample.labels["partition"])
                    lag[key] = sample.value
    return dict(open_regions), lag, errors


def create_status_app(settings: Settings, metrics_urls: list[str], recent: int = 200) -> web.Application:
    state = StatusState(recent=recent)

    def on_scored(value: bytes) -> None:
        try:
            state.add_scored(decode(value, ScoredExample))
        except msgspec.DecodeError:
            pass  # not a scored example: the topic's producers dead-letter their own

    def on_model(value: bytes) -> None:
        try:
            state.models.append(decode(value, ModelPublished))
        except msgspec.DecodeError:
            pass

    async def start_followers(app: web.Application) -> None:
        app["followers"] = [asyncio.create_task(follow(settings, SCORED, on_scored)),
                            asyncio.create_task(follow(settings, MODELS, on_model))]

    async def stop_followers(app: web.Application) -> None:
        for task in app["followers"]:
            task.cancel()

    async def index(request: web.Request) -> web.Response:
        open_regions, lag, errors = await asyncio.to_thread(scrape, metrics_urls)
        data = StatusData(scored=list(state.scored), scored_total=state.scored_total, decisions=state.decisions,
                          models=list(state.models), open_regions=open_regions, lag=lag, metrics_errors=errors,
                          generated_at=time.time())
        return web.Response(text=page(data, settings.topic_prefix), content_type="text/html")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.on_startup.append(start_followers)
    app.on_cleanup.append(stop_followers)
    return app
