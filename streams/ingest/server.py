"""``settle ingest``: the HTTP endpoint editors post telemetry to (aiohttp + aiokafka).

A thin shell around the pure parts (``bodies``, ``limits``, ``join``, ``zed_settled``):

- ``POST /v1/events``: JSON lines or a JSON array of ``edits`` events (gzip/zstd
  allowed). Every value goes through ``decode_event``, the stream's own decoder;
  good ones go to ``edits`` keyed by buffer, bad ones are answered with their
  position and reason and sent to ``dead-letter``. Ticks are refused: a client's
  clock must not move a partition's watermark.
- ``POST /predict_edits/requests``: ``prediction_requested`` events of clients
  that settle regions themselves (Zed). They wait in a bounded in-memory join for
  their settled report and never reach ``edits`` (no buffer edits follow them
  there, so the tracker would settle them unchanged).
- ``POST /predict_edits/settled``: Zed's ``SubmitEditPredictionSettledBatchBody``
  (zstd JSON). Each report joined with its request becomes a ``SettledExample``
  on ``settled``; one without consent is counted and stored nowhere; one whose
  request never came is dead-lettered as ``unmatched_request``.
- ``GET /healthz`` (the process runs), ``GET /readyz`` (the broker answers),
  ``GET /metrics`` (Prometheus).

A 2xx is sent only after the broker acknowledged (``acks=all``) every record the
post produced, dead letters included; otherwise 503 with ``Retry-After``, and a
client that retries may deliver some records twice (the broker may have taken
part of a post before failing). With an ``Idempotency-Key`` header a retry is
exact as far as this process can know: a post whose first answer was final (2xx
or 4xx) is answered again from memory, producing nothing, and a ``/v1/events``
post refused part-way sends only the records the broker had not acknowledged
(bounded memory; see ``IngestServer._idempotent``). Records whose
acknowledgement was lost in a broker crash can still repeat: Tansu has no
idempotent producer (``InitProducerId`` fails), so Kafka cannot dedupe them. Every record of one post carries one Kafka
timestamp, the ingest wall clock, which the stream can use as event time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from settle.schemas.codecs import InvalidRecord, decode_event, encode
from settle.schemas.events import PredictionRequested, Tick, buffer_key
from settle.schemas.examples import KeptRate
from settle.streams.ingest import zed_settled
from settle.streams.ingest.bodies import BodyError, Item, decompress, split_values
from settle.streams.ingest.config import IngestConfig
from settle.streams.ingest.join import RequestJoin
from settle.streams.ingest.limits import TokenBucket, client_of
from settle.streams.kafka import prometheus as metrics
from settle.streams.kafka.security import client_kwargs
from settle.streams.kafka.topics import ensure_topics
from settle.streams.records import Consumed, dead_letter
from settle.streams.settings import DEAD_LETTER, EDITS, SETTLED, Settings
from settle.streams.settling.safety import Safety

log = logging.getLogger("settle.ingest")

#: the (client, Idempotency-Key) of a keyed post, for its handler
IDEMPOTENCY_SLOT = web.RequestKey("idempotency_slot", tuple)
#: a post's (client, decoded body), once admitted: read once, whoever asks first
ADMITTED = web.RequestKey("admitted", tuple)
#: digest of a keyed post's route and decoded body, what its Idempotency-Key is bound to
FINGERPRINT = web.RequestKey("fingerprint", bytes)
#: longest Idempotency-Key taken (a longer one is refused, not ignored)
MAX_IDEMPOTENCY_KEY = 256

EVENTS_ROUTE, REQUESTS_ROUTE, SETTLED_ROUTE = "/v1/events", "/predict_edits/requests", "/predict_edits/settled"


class Unavailable(Exception):
    """The broker did not acknowledge in time (or is not connected yet).

    ``acked`` holds the indexes of the records the broker did acknowledge before the failure.
    """

    def __init__(self, message: str, acked: frozenset[int] = frozenset()) -> None:
        super().__init__(message)
        self.acked = acked


@dataclass
class _Rejected:
    position: int
    reason: str
    error: str
    raw: bytes


@dataclass
class IngestServer:
    settings: Settings
    config: IngestConfig
    tokens: dict[str, str]
    producer: AIOKafkaProducer | None = None
    join: RequestJoin = field(init=False)
    bucket: TokenBucket = field(init=False)
    safety: Safety = field(init=False)
    _connector: asyncio.Task[None] | None = field(default=None, init=False)
    _ready_at: float = field(default=0.0, init=False)
    #: final answers to posts that carried an Idempotency-Key, by (client, key), oldest first:
    #: (fingerprint of the request, status, body)
    _answers: OrderedDict[tuple[str, str], tuple[bytes, int, bytes]] = field(default_factory=OrderedDict, init=False)
    _in_flight: dict[tuple[str, str], tuple[bytes, asyncio.Future[tuple[int, bytes]]]] = field(default_factory=dict,
                                                                                                init=False)
    #: keyed posts that failed part-way: (fingerprint of the request, indexes of its records the broker acknowledged)
    _partial: OrderedDict[tuple[str, str], tuple[bytes, frozenset[int]]] = field(default_factory=OrderedDict,
                                                                                 init=False)

    def __post_init__(self) -> None:
        self.join = RequestJoin(self.config.join_max_entries, int(self.config.join_max_age_s * 1000))
        self.bucket = TokenBucket(self.config.rate_per_s, self.config.burst)
        self.safety = Safety(self.settings.safety)

    # -- lifecycle -------------------------------------------------------------------

    def app(self) -> web.Application:
        # Decompression stays ours (bodies.decompress): bounded, so a small zstd bomb cannot inflate unchecked,
        # and client_max_size then limits the bytes on the wire.
        app = web.Application(client_max_size=self.config.max_body_bytes, handler_args={"auto_decompress": False})
        app.router.add_post(EVENTS_ROUTE, self.post_events)
        app.router.add_post(REQUESTS_ROUTE, self.post_requests)
        app.router.add_post(SETTLED_ROUTE, self.post_settled)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self._connector = asyncio.create_task(self._connect())

    async def _on_cleanup(self, app: web.Application) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await self.producer.stop()

    async def _connect(self) -> None:
        """Start the producer, retrying until the broker answers (the server is up, not ready, meanwhile)."""
        while self.producer is None:
            producer = AIOKafkaProducer(
                **client_kwargs(self.settings),  # bootstrap, protocol, SASL, TLS (streams/kafka/security.py)
                acks="all",
                linger_ms=2,
                max_batch_size=512 * 1024,
                request_timeout_ms=int(self.config.ack_timeout_s * 1000),
                retry_backoff_ms=200,
            )
            try:
                await producer.start()
            except Exception as exc:  # broker not up yet
                log.warning("ingest: broker %s not reachable yet: %s", self.settings.bootstrap, exc)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(1.0)
                continue
            try:
                await ensure_topics(self.settings)  # explicit partitions, never the broker's auto-created ones
            except Exception as exc:
                log.warning("ingest: could not create topics: %s", exc)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(1.0)
                continue
            self.producer = producer

    # -- delivery --------------------------------------------------------------------

    async def deliver(self, records: list[tuple[str, bytes | None, bytes]], timestamp_ms: int,
                      skip: frozenset[int] = frozenset()) -> None:
        """Produce (logical topic, key, value) records, except the indexes in ``skip``, and wait until the
        broker acknowledged all of them; otherwise raise Unavailable naming the ones it did acknowledge."""
        if self.producer is None:
            raise Unavailable("not connected to the broker yet")
        producer = self.producer
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.ack_timeout_s
        futures: dict[int, asyncio.Future[Any]] = {}

        async def enqueue() -> None:
            for i, (topic, key, value) in enumerate(records):
                if i not in skip:
                    futures[i] = await producer.send(self.settings.topic(topic), value=value, key=key,
                                                     timestamp_ms=timestamp_ms)

        error: BaseException | None = None
        try:
            await asyncio.wait_for(enqueue(), self.config.ack_timeout_s)  # send() waits for metadata
        except Exception as exc:
            error = exc
        if error is None and futures:
            # asyncio.wait, not gather: a failure must not cancel the other acknowledgements in flight
            done, pending = await asyncio.wait(futures.values(), timeout=max(0.0, deadline - loop.time()))
            failed = next((f.exception() for f in done if f.exception() is not None), None)
            if pending or failed is not None:
                error = failed or asyncio.TimeoutError(f"no acknowledgement within {self.config.ack_timeout_s:g} s")
        if error is None:
            return
        pending = {f for f in futures.values() if not f.done()}
        if pending:  # what is already on its way may still be acknowledged: count it if so
            await asyncio.wait(pending, timeout=1.0)
        acked = frozenset(i for i, f in futures.items() if f.done() and not f.cancelled() and f.exception() is None)
        for f in futures.values():  # retrieved here, so no "exception was never retrieved" later
            if f.done() and not f.cancelled():
                f.exception()
            else:
                f.add_done_callback(lambda f: f.cancelled() or f.exception())
        raise Unavailable(f"{type(error).__name__}: {error}", acked | skip) from error

    def _dead_letter(self, route: str, client: str, rejected: _Rejected, key: bytes | None = None) -> tuple[str, bytes | None, bytes]:
        source = Consumed(f"http:{route}", -1, rejected.position, key, rejected.raw)
        letter = dead_letter(source, rejected.reason, rejected.error, f"ingest:{client}")
        return (DEAD_LETTER, letter.key, letter.value)

    # -- request plumbing ------------------------------------------------------------

    def _answer(self, route: str, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
        metrics.INGEST_REQUESTS.labels(route, str(status)).inc()
        return web.json_response(body, status=status, headers=headers)

    def _error(self, route: str, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return self._answer(route, status, {"error": reason, "message": message}, headers)

    async def _admit(self, request: web.Request, route: str) -> tuple[str, bytes] | web.Response:
        """(client, decoded body), or the error response: auth, size, encoding. Read once per request."""
        if ADMITTED in request:
            return request[ADMITTED]
        client = client_of(request.headers.get("Authorization"), self.tokens)
        if client is None:
            return self._error(route, 401, "unauthorized", "missing or unknown bearer token",
                               {"WWW-Authenticate": 'Bearer realm="settle"'})
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._error(route, 413, "body_too_large", f"body exceeds {self.config.max_body_bytes} bytes")
        try:
            payload = decompress(body, request.headers.get("Content-Encoding"), self.config.max_decoded_bytes)
        except BodyError as exc:
            return self._error(route, exc.status, exc.reason, exc.message)
        request[ADMITTED] = (client, payload)
        return client, payload

    def _rate(self, route: str, client: str, cost: int) -> web.Response | None:
        wait = self.bucket.take(client, cost, time.monotonic())
        if wait > 0:
            return self._error(route, 429, "rate_limited", f"over {self.config.rate_per_s:g} values/s for {client}",
                               {"Retry-After": str(max(1, int(wait + 0.999)))})
        return None

    def _unavailable(self, route: str, exc: Exception) -> web.Response:
        log.warning("ingest: broker did not acknowledge: %s", exc)
        return self._error(route, 503, "broker_unavailable", f"nothing was accepted: {exc}", {"Retry-After": "1"})

    async def _take_values(self, request: web.Request, route: str) -> tuple[str, bytes, list[Item]] | web.Response:
        """(client, body, values) of an admitted post within its client's rate, or the answer refusing it."""
        admitted = await self._admit(request, route)
        if isinstance(admitted, web.Response):
            return admitted
        client, payload = admitted
        items = self._values(route, payload)
        if isinstance(items, web.Response):
            return items
        limited = self._rate(route, client, len(items))
        return limited if limited is not None else (client, payload, items)

    def _values(self, route: str, payload: bytes) -> list[Item] | web.Response:
        try:
            items = split_values(payload)
        except BodyError as exc:
            return self._error(route, exc.status, exc.reason, exc.message)
        if len(items) > self.config.max_values:
            return self._error(route, 413, "too_many_values", f"{len(items)} values > {self.config.max_values}")
        return items

    # -- routes ----------------------------------------------------------------------

    async def post_events(self, request: web.Request) -> web.Response:
        return await self._idempotent(request, self._post_events)

    async def post_settled(self, request: web.Request) -> web.Response:
        return await self._idempotent(request, self._post_settled)

    async def _idempotent(self, request: web.Request, handler: Any) -> web.Response:
        """Answer a retried post (same client, same ``Idempotency-Key``) as the first time, producing nothing.

        Covers the retry of a post whose 2xx (or 4xx) answer was lost on the way. An answer of 5xx
        or 429 is not remembered, so the retry does the work; for ``/v1/events`` the records the
        broker acknowledged before the failure are remembered too and not sent again. The key is
        bound to its request's fingerprint (route and decoded body): the same key with another
        request is refused with 422 ``idempotency_key_reused`` (IETF draft
        httpapi-idempotency-key-header), never answered with the other request's answer.
        """
        key = request.headers.get("Idempotency-Key", "").strip()
        client = client_of(request.headers.get("Authorization"), self.tokens)
        if not key or client is None:
            return await handler(request)
        if len(key) > MAX_IDEMPOTENCY_KEY:  # refused, not ignored: the client counts on it
            return self._error(request.path, 400, "idempotency_key_too_long",
                               f"Idempotency-Key has {len(key)} characters > {MAX_IDEMPOTENCY_KEY}")
        admitted = await self._admit(request, request.path)
        if isinstance(admitted, web.Response):
            return admitted  # unauthorised, too large, bad encoding: nothing done, nothing to remember
        fingerprint = hashlib.blake2b(request.path.encode() + b"\0" + admitted[1], digest_size=16).digest()
        slot = (client, key)
        request[IDEMPOTENCY_SLOT] = slot
        request[FINGERPRINT] = fingerprint
        earlier = (self._answers.get(slot), self._in_flight.get(slot), self._partial.get(slot))
        if next((e[0] for e in earlier if e is not None), fingerprint) != fingerprint:
            return self._error(request.path, 422, "idempotency_key_reused",
                               "this Idempotency-Key came with another request (route or body); use a new key")
        if slot in self._answers:
            _, status, body = self._answers[slot]
        elif slot in self._in_flight:
            status, body = await asyncio.shield(self._in_flight[slot][1])
        else:
            future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
            self._in_flight[slot] = (fingerprint, future)
            try:
                response = await handler(request)
                status, body = response.status, bytes(response.body)  # type: ignore[arg-type]
                if status < 500 and status != 429:
                    self._answers[slot] = (fingerprint, status, body)
                    while len(self._answers) > self.config.idempotency_keys:
                        self._answers.popitem(last=False)
                future.set_result((status, body))
                return response
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: a waiting retry re-raises it, nobody else must
                raise
            finally:
                del self._in_flight[slot]
        metrics.INGEST_REQUESTS.labels(request.path, f"{status} replayed").inc()
        return web.Response(body=body, status=status, content_type="application/json",
                            headers={"Idempotent-Replayed": "true"})

    async def _post_events(self, request: web.Request) -> web.Response:
        route = EVENTS_ROUTE
        taken = await self._take_values(request, route)
        if isinstance(taken, web.Response):
            return taken
        client, payload, items = taken
        now_ms = int(time.time() * 1000)
        records: list[tuple[str, bytes | None, bytes]] = []
        rejected: list[_Rejected] = []
        for item in items:
            try:
                event = decode_event(item.raw)
            except InvalidRecord as exc:
                rejected.append(_Rejected(item.position, exc.reason, exc.message, item.raw))
                continue
            if isinstance(event, Tick):
                rejected.append(_Rejected(item.position, "tick_not_accepted",
                                          "ticks come from settle workers, not from clients", item.raw))
                continue
            records.append((EDITS, buffer_key(event.session_id, event.path).encode(), item.raw))
        accepted = len(records)
        records.extend(self._dead_letter(route, client, r) for r in rejected)
        # A keyed retry of a post that failed part-way sends only what the broker did not acknowledge yet
        # (_idempotent refused it already if the body differs).
        slot = request.get(IDEMPOTENCY_SLOT)
        digest = request.get(FINGERPRINT, b"")
        skip: frozenset[int] = frozenset()
        if slot is not None and slot in self._partial:
            _, skip = self._partial[slot]
        try:
            await self.deliver(records, now_ms, skip)
        except Unavailable as exc:
            if slot is not None:
                self._partial[slot] = (digest, exc.acked)
                self._partial.move_to_end(slot)
                while len(self._partial) > self.config.idempotency_keys:
                    self._partial.popitem(last=False)
            return self._unavailable(route, exc)
        if slot is not None:
            self._partial.pop(slot, None)
        metrics.INGEST_RECORDS.labels(route, "accepted").inc(accepted)
        for r in rejected:
            metrics.INGEST_RECORDS.labels(route, r.reason).inc()
        status = 200 if accepted or not rejected else 400
        return self._answer(route, status, {
            "accepted": accepted,
            "rejected": [{"position": r.position, "reason": r.reason, "error": r.error} for r in rejected],
        })

    async def post_requests(self, request: web.Request) -> web.Response:
        route = REQUESTS_ROUTE
        taken = await self._take_values(request, route)
        if isinstance(taken, web.Response):
            return taken
        client, payload, items = taken
        now_ms = int(time.time() * 1000)
        rejected: list[_Rejected] = []
        good: list[PredictionRequested] = []
        for item in items:
            try:
                event = decode_event(item.raw)
            except InvalidRecord as exc:
                rejected.append(_Rejected(item.position, exc.reason, exc.message, item.raw))
                continue
            if not isinstance(event, PredictionRequested):
                rejected.append(_Rejected(item.position, "not_a_request",
                                          f"this route takes prediction_requested events, not {type(event).__name__}",
                                          item.raw))
                continue
            good.append(event)
        try:
            await self.deliver([self._dead_letter(route, client, r) for r in rejected], now_ms)
        except Unavailable as exc:
            return self._unavailable(route, exc)
        remembered = sum(self.join.remember(ev, now_ms) for ev in good)
        self._observe_join()
        status = 200 if good or not rejected else 400
        return self._answer(route, status, {
            "accepted": len(good),
            "duplicates": len(good) - remembered,
            "rejected": [{"position": r.position, "reason": r.reason, "error": r.error} for r in rejected],
        })

    async def _post_settled(self, request: web.Request) -> web.Response:
        route = SETTLED_ROUTE
        admitted = await self._admit(request, route)
        if isinstance(admitted, web.Response):
            return admitted
        client, payload = admitted
        try:
            batch = zed_settled.decode_batch(payload)
        except InvalidRecord as exc:  # byte_order_mark, invalid_utf8, malformed, ..., invalid_batch
            return self._error(route, 400, exc.reason, f"not a SubmitEditPredictionSettledBatchBody: {exc.message}")
        n = len(batch.predictions)
        if n > zed_settled.MAX_REPORTS_PER_BATCH:
            return self._error(route, 413, "too_many_reports", f"{n} reports > {zed_settled.MAX_REPORTS_PER_BATCH}")
        limited = self._rate(route, client, n)
        if limited is not None:
            return limited
        if self.producer is None:
            return self._unavailable(route, Unavailable("not connected to the broker yet"))
        now_ms = int(time.time() * 1000)
        records: list[tuple[str, bytes | None, bytes]] = []
        taken: list[PredictionRequested] = []
        outcomes: dict[str, int] = {}
        settled = []
        for position, report in enumerate(batch.predictions, 1):
            joined = self.join.take(report.request_id, now_ms)
            if joined is not None:
                taken.append(joined)
            mapped = zed_settled.map_report(report, joined, now_ms)
            if mapped.example is not None:  # excluded files, secrets, caps (streams/settling/safety.py)
                safe = self.safety.apply(mapped.example)
                mapped = zed_settled.Mapped("unsafe") if safe is None else zed_settled.Mapped("settled", safe)  # type: ignore[arg-type]
            outcomes[mapped.outcome] = outcomes.get(mapped.outcome, 0) + 1
            if mapped.example is not None:
                settled.append((mapped.example, report.client_kept_rate()))
                records.append((SETTLED, mapped.example.id.encode(), encode(mapped.example)))
            elif mapped.outcome not in ("no_consent", "unsafe"):  # without consent or unsafe: stored nowhere, only counted
                raw = msgspec.json.encode(report)
                records.append(self._dead_letter(route, client, _Rejected(position, mapped.outcome, mapped.error, raw),
                                                 key=report.request_id.encode()))
        try:
            await self.deliver(records, now_ms)
        except Unavailable as exc:
            for req in taken:
                self.join.put_back(req, now_ms)
            return self._unavailable(route, exc)
        for outcome, count in outcomes.items():
            metrics.ZED_REPORTS.labels(outcome).inc(count)
        for report in batch.predictions:
            # Zed sends its kept-rate numbers (no text) with or without consent: the production view of every report
            client_rate = report.client_kept_rate()
            if client_rate is not None:
                metrics.ZED_REPORTED_KEPT_RATE.labels(report.model_version or "unknown").observe(client_rate.kept_rate)
        for example, client_rate in settled:
            metrics.observe_kept_rate(example.production_model, example.production_kept_rate)
            if client_rate is not None and example.production_kept_rate is not None:
                # Zed computed the same metric on the client: a disagreement means the request we joined
                # is not the prediction the client measured (or the two implementations drifted apart)
                agrees = _same_rate(client_rate, example.production_kept_rate)
                metrics.ZED_KEPT_RATE_CHECKS.labels("agrees" if agrees else "differs").inc()
        self._observe_join()
        return self._answer(route, 200, {"accepted": n, **{k: v for k, v in sorted(outcomes.items())}})

    def _observe_join(self) -> None:
        stats = self.join.stats
        metrics.JOIN_WAITING.set(len(self.join))
        for name in ("matched", "unmatched_reports", "evicted", "expired", "duplicates"):
            metrics.JOIN_COUNTS.labels(name).set(getattr(stats, name))

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready when the producer is connected and the broker answered a metadata request within 2 s."""
        producer = self.producer
        if producer is None:
            return web.json_response({"status": "connecting", "bootstrap": self.settings.bootstrap}, status=503)
        if time.monotonic() - self._ready_at > 1.0:
            try:
                ok = await asyncio.wait_for(producer.client.fetch_all_metadata(), 2.0)
                ok = bool(ok.brokers())
            except Exception:
                ok = False
            if not ok:
                return web.json_response({"status": "broker_unavailable", "bootstrap": self.settings.bootstrap},
                                         status=503)
            self._ready_at = time.monotonic()
        return web.json_response({"status": "ready", "join_waiting": len(self.join)})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _same_rate(a: KeptRate, b: KeptRate) -> bool:
    return (a.kept, a.candidate_new, a.candidate_deleted, a.correctly_deleted) == (
        b.kept, b.candidate_new, b.candidate_deleted, b.correctly_deleted) and abs(a.kept_rate - b.kept_rate) < 1e-9


def run_ingest(settings: Settings, config: IngestConfig) -> None:
    """Serve until interrupted."""
    tokens = config.token_map()
    server = IngestServer(settings, config, tokens)
    web.run_app(server.app(), host=config.host, port=config.port, print=None, access_log=None)


__all__ = ["IngestServer", "IngestConfig", "run_ingest"]
