"""`settle status`: the status page, served over HTTP, fed by the topics and the workers' metrics.

Two followers run beside the web server: one reads `scored` from the beginning (keeping
the most recent examples and the decision counts of all), one reads `models`. Each page
request scrapes the given metrics endpoints (workers, scorers) for open regions and lag,
and asks the broker whether it answers: a dead broker, a topic that is not there or
records that do not decode are said on the page, never shown as an empty deployment.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import urllib.request
from dataclasses import dataclass, field

from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from settle.schemas.codecs import InvalidRecord, decode_model, decode_scored
from settle.schemas.models import ModelPublished
from settle.schemas.scored import ScoredExample
from settle.streams.kafka.io import broker_topics, topic_partitions
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
    #: why a follower is not reading its topic (broker unreachable, topic missing), by topic; cleared once it reads
    follower_errors: dict[str, str] = field(default_factory=dict)
    #: records that did not decode, by (topic, reason): counted and shown, not dropped silently
    undecodable: collections.Counter = field(default_factory=collections.Counter)

    def add_scored(self, s: ScoredExample) -> None:
        if s.id in self.seen:
            return  # a re-scored repeat (same id): counted once
        self.seen.add(s.id)
        self.scored_total += 1
        self.decisions[s.decision.decision] += 1
        self.scored.append(s)
        while len(self.scored) > self.recent:
            self.scored.popleft()


async def follow(settings: Settings, topic: str, on_value, errors: dict[str, str] | None = None,
                 poll_ms: int = 500, retry_s: float = 2.0) -> None:
    """Read a topic from the beginning and keep following it (no group: nothing committed).

    What stops it (no broker, the topic not there yet) is written to ``errors[topic]`` for the page
    and retried every ``retry_s``, from the offsets already read, so nothing is counted twice.
    """
    errors = {} if errors is None else errors
    name = settings.topic(topic)
    positions: dict[int, int] = {}
    while True:
        consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
        try:
            await consumer.start()
            tps = [TopicPartition(name, p) for p in await topic_partitions(consumer, name, timeout_s=0)]
            consumer.assign(tps)
            for tp in tps:
                if tp.partition in positions:
                    consumer.seek(tp, positions[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            errors.pop(topic, None)
            while True:
                for tp, msgs in (await consumer.getmany(timeout_ms=poll_ms, max_records=2000)).items():
                    for m in msgs:
                        positions[tp.partition] = m.offset + 1
                        on_value(m.value or b"")
        except asyncio.CancelledError:
            raise
        except LookupError:
            errors[topic] = f"topic {name!r} does not exist on the broker at {settings.bootstrap} (yet)"
        except Exception as exc:  # noqa: BLE001 - said on the page and retried; the page must stay up
            errors[topic] = f"cannot read {name!r} from the broker at {settings.bootstrap}: {type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
        log.warning("status: %s; retrying in %g s", errors.get(topic), retry_s)
        await asyncio.sleep(retry_s)


async def broker_problem(settings: Settings, timeout_s: float = 3.0) -> str | None:
    """Why the broker cannot be used right now (None: it answers)."""
    try:
        await asyncio.wait_for(broker_topics(settings, timeout_s), timeout_s + 1)
    except Exception as exc:  # noqa: BLE001 - any failure to answer is the news
        return f"cannot reach the Kafka broker at {settings.bootstrap}: {type(exc).__name__}: {exc}".rstrip(": ")
    return None


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
            state.add_scored(decode_scored(value))
        except InvalidRecord as exc:  # the topic's producers dead-letter their own; the page counts them
            state.undecodable[(SCORED, exc.reason)] += 1

    def on_model(value: bytes) -> None:
        try:
            state.models.append(decode_model(value))
        except InvalidRecord as exc:
            state.undecodable[(MODELS, exc.reason)] += 1

    async def start_followers(app: web.Application) -> None:
        app["followers"] = [asyncio.create_task(follow(settings, SCORED, on_scored, state.follower_errors)),
                            asyncio.create_task(follow(settings, MODELS, on_model, state.follower_errors))]

    async def stop_followers(app: web.Application) -> None:
        for task in app["followers"]:
            task.cancel()

    async def index(request: web.Request) -> web.Response:
        (open_regions, lag, errors), broker = await asyncio.gather(asyncio.to_thread(scrape, metrics_urls),
                                                                   broker_problem(settings))
        problems = [broker] if broker else []
        problems += [state.follower_errors[t] for t in sorted(state.follower_errors)]
        problems += [f"{n} record(s) on {settings.topic(t)} did not decode ({reason})"
                     for (t, reason), n in sorted(state.undecodable.items())]
        data = StatusData(scored=list(state.scored), scored_total=state.scored_total, decisions=state.decisions,
                          models=list(state.models), open_regions=open_regions, lag=lag, metrics_errors=errors,
                          broker_errors=problems, generated_at=time.time())
        return web.Response(text=page(data, settings.topic_prefix), content_type="text/html")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.on_startup.append(start_followers)
    app.on_cleanup.append(stop_followers)
    return app
