"""`settle ingest` against the real embedded broker: auth, bad lines, Zed's settled batches, a broker restart.

The server runs in the test's event loop (aiohttp's AppRunner), clients post over
real HTTP, and every check reads the topics back from the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import msgspec
import pytest
import zstandard
from aiohttp import web
from aiokafka import AIOKafkaConsumer

from settle.schemas.codecs import decode, decode_settled, encode
from settle.schemas.events import BufferEdited, PredictionRequested, Replacement, Span, Tick, buffer_key
from settle.schemas.examples import DeadLetter
from settle.streams.ingest.config import IngestConfig
from settle.streams.ingest.server import IngestServer
from settle.streams.local.broker import EmbeddedBroker, free_port
from settle.streams.local.s3 import LocalS3, moto_server_binary
from settle.streams.scoring.kept_rate import compute_kept_rate
from settle.streams.settings import DEAD_LETTER, EDITS, SETTLED, Settings
from settle.streams.settling.tracker import region_id

pytestmark = [pytest.mark.broker]

TOKENS = {"tok-zed": "zed", "tok-vim": "vim"}
ZED = {"Authorization": "Bearer tok-zed"}
VIM = {"Authorization": "Bearer tok-vim"}


@contextlib.asynccontextmanager
async def serving(settings: Settings, ready: bool = True,
                  **config: object) -> AsyncIterator[tuple[IngestServer, aiohttp.ClientSession]]:
    cfg = replace(IngestConfig(port=free_port()), **config)  # type: ignore[arg-type]
    server = IngestServer(settings, cfg, dict(TOKENS))
    runner = web.AppRunner(server.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", cfg.port).start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{cfg.port}") as http:
            deadline = time.monotonic() + 20
            while ready and (await http.get("/readyz")).status != 200:
                assert time.monotonic() < deadline, "ingest never became ready"
                await asyncio.sleep(0.1)
            yield server, http
    finally:
        await runner.cleanup()


async def read_all(settings: Settings, topic: str, idle_s: float = 1.0) -> list:
    """Every record of a topic (with its Kafka timestamp), until idle."""
    consumer = AIOKafkaConsumer(settings.topic(topic), bootstrap_servers=settings.bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list = []
    try:
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            batches = await consumer.getmany(timeout_ms=200)
            for msgs in batches.values():
                out.extend(msgs)
                if msgs:
                    last = time.monotonic()
    finally:
        await consumer.stop()
    return out


def request_event(rid: str, session: str = "s1", **kw: object) -> PredictionRequested:
    base = dict(time_ms=1_000, session_id=session, path="a.py", consent=True, request_id=rid,
                region=Span(0, 6), region_text="x = 1\n", cursor=5, production_prediction="x = 2\n",
                production_model="zeta-test")
    base.update(kw)
    return PredictionRequested(**base)  # type: ignore[arg-type]


def test_a_wrong_or_missing_token_is_refused_and_nothing_is_produced(settings: Settings) -> None:
    async def main() -> None:
        line = encode(request_event("r1"))
        async with serving(settings) as (_, http):
            for headers in ({"Authorization": "Bearer nope"}, {}, {"Authorization": "Basic tok-zed"}):
                resp = await http.post("/v1/events", data=line, headers=headers)
                assert resp.status == 401
                assert (await resp.json())["error"] == "unauthorized"
            resp = await http.post("/predict_edits/settled", data=b'{"predictions": []}', headers={})
            assert resp.status == 401
            assert (await http.get("/healthz")).status == 200
        assert await read_all(settings, EDITS) == []

    asyncio.run(main())


def test_bad_lines_are_answered_with_their_reason_and_dead_lettered(settings: Settings) -> None:
    async def main() -> None:
        good1 = encode(request_event("r1"))
        good2 = encode(BufferEdited(time_ms=2_000, session_id="s1", path="a.py", consent=True,
                                    replacements=[Replacement(start=4, end=5, text="2")]))
        bad = [b"{not json", encode(Tick(time_ms=5)), b'{"kind": "cursor_moved", "time_ms": 1}']
        body = gzip.compress(b"\n".join([good1, *bad, b"", good2]) + b"\n")
        async with serving(settings) as (_, http):
            before = int(time.time() * 1000)
            resp = await http.post("/v1/events", data=body, headers={**VIM, "Content-Encoding": "gzip"})
            after = int(time.time() * 1000)
            assert resp.status == 200
            answer = await resp.json()
            assert answer["accepted"] == 2
            assert [(r["position"], r["reason"]) for r in answer["rejected"]] == [
                (2, "malformed"), (3, "tick_not_accepted"), (4, "unknown_kind")]
            all_bad = await http.post("/v1/events", data=b"[1, 2]", headers=VIM)  # an array of non-objects
            assert all_bad.status == 400
            assert [r["reason"] for r in (await all_bad.json())["rejected"]] == ["not_an_object"] * 2

        edits = await read_all(settings, EDITS)
        assert sorted(m.value for m in edits) == sorted([good1, good2])  # the bytes the editor sent
        assert {m.key for m in edits} == {buffer_key("s1", "a.py").encode()}
        assert all(before <= m.timestamp <= after for m in edits)  # the record timestamp is the ingest clock
        letters = [decode(m.value, DeadLetter) for m in await read_all(settings, DEAD_LETTER)]
        assert sorted((d.offset, d.reason, d.value) for d in letters if d.offset < 5 and d.value in bad) == [
            (2, "malformed", bad[0]), (3, "tick_not_accepted", bad[1]), (4, "unknown_kind", bad[2])]
        assert {d.agent for d in letters} == {"ingest:vim"} and {d.source_topic for d in letters} == {"http:/v1/events"}
        assert len(letters) == 5

    asyncio.run(main())


def test_limits_answer_413_415_429_and_no_broker_answers_503(settings: Settings) -> None:
    async def main() -> None:
        line = encode(request_event("r1"))
        async with serving(settings, rate_per_s=10.0, burst=20.0, max_body_bytes=20_000,
                           max_decoded_bytes=100_000) as (_, http):
            resp = await http.post("/v1/events", data=b"\n".join([line] * 21), headers=VIM)
            assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1  # more than the burst at once
            assert (await http.post("/v1/events", data=b"\n".join([line] * 20), headers=VIM)).status == 200
            assert (await http.post("/v1/events", data=line, headers=VIM)).status == 429  # bucket empty now
            assert (await http.post("/v1/events", data=line, headers=ZED)).status == 200  # another client's own
            resp = await http.post("/v1/events", data=b" " * 20_001, headers=ZED)
            assert resp.status == 413
            bomb = zstandard.ZstdCompressor().compress(b" " * 200_000)  # 200 kB from a few bytes
            resp = await http.post("/v1/events", data=bomb, headers={**ZED, "Content-Encoding": "zstd"})
            assert resp.status == 413 and (await resp.json())["error"] == "body_too_large"
            resp = await http.post("/v1/events", data=line, headers={**ZED, "Content-Encoding": "br"})
            assert resp.status == 415
        assert len(await read_all(settings, EDITS)) == 21

        nowhere = replace(settings, bootstrap=f"127.0.0.1:{free_port()}")
        async with serving(nowhere, ready=False, ack_timeout_s=1.0) as (_, http):
            assert (await http.get("/healthz")).status == 200
            assert (await http.get("/readyz")).status == 503
            resp = await http.post("/v1/events", data=line, headers=VIM)
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"

    asyncio.run(main())


def test_a_retried_post_with_an_idempotency_key_is_answered_again_and_produced_once(settings: Settings) -> None:
    async def main() -> None:
        lines = [encode(request_event(f"r{i}")) for i in range(3)] + [b"{bad"]
        body = b"\n".join(lines)
        async with serving(settings) as (_, http):
            answers = await asyncio.gather(*(http.post("/v1/events", data=body,
                                                       headers={**VIM, "Idempotency-Key": "post-1"})
                                              for _ in range(4)))  # a post and three retries, all in flight
            other_client = await http.post("/v1/events", data=body, headers={**ZED, "Idempotency-Key": "post-1"})
            assert sum("Idempotent-Replayed" not in r.headers for r in answers) == 1  # one did the work
            bodies = [await r.json() for r in answers]
            assert all(r.status == 200 for r in answers) and all(b == bodies[0] for b in bodies)
            assert bodies[0]["accepted"] == 3
            later = await http.post("/v1/events", data=body, headers={**VIM, "Idempotency-Key": "post-1"})
            assert later.headers["Idempotent-Replayed"] == "true" and await later.json() == bodies[0]
            assert other_client.status == 200 and "Idempotent-Replayed" not in other_client.headers
        edits = await read_all(settings, EDITS)
        assert sorted(m.value for m in edits) == sorted(lines[:3] * 2)  # once per client, not per retry
        assert len(await read_all(settings, DEAD_LETTER)) == 2

    asyncio.run(main())


def test_a_byte_order_mark_is_refused_and_dead_lettered_like_on_edits(settings: Settings) -> None:
    """A BOM at the start of a body was stripped (the line accepted) and a UTF-16 BOM read as msgpack."""
    async def main() -> None:
        line = encode(request_event("r1"))
        bad = [b"\xef\xbb\xbf" + line, b"\xff\xfe" + line]
        async with serving(settings) as (_, http):
            resp = await http.post("/v1/events", data=b"\n".join([*bad, line]), headers=VIM)
            answer = await resp.json()
            assert resp.status == 200 and answer["accepted"] == 1
            assert [(r["position"], r["reason"]) for r in answer["rejected"]] == [
                (1, "byte_order_mark"), (2, "invalid_utf8")]
            resp = await http.post("/v1/events", data=b"\xef\xbb\xbf[" + line + b"]", headers=VIM)
            assert resp.status == 400 and (await resp.json())["error"] == "byte_order_mark"
        assert [m.value for m in await read_all(settings, EDITS)] == [line]
        letters = [decode(m.value, DeadLetter) for m in await read_all(settings, DEAD_LETTER)]
        assert sorted((d.reason, d.value) for d in letters) == [("byte_order_mark", bad[0]), ("invalid_utf8", bad[1])]

    asyncio.run(main())


def test_an_idempotency_key_reused_with_another_request_is_refused_not_replayed(settings: Settings) -> None:
    """The same key with another body (or route) was answered with the first post's answer, its own records
    silently dropped; now 422 ``idempotency_key_reused`` and nothing produced (IETF idempotency-key draft)."""
    async def main() -> None:
        first, other = encode(request_event("r1")), encode(request_event("r2"))
        key = {**VIM, "Idempotency-Key": "k-1"}
        async with serving(settings) as (_, http):
            resp = await http.post("/v1/events", data=first, headers=key)
            assert resp.status == 200 and (await resp.json())["accepted"] == 1
            for route, body in (("/v1/events", other), ("/predict_edits/settled", b'{"predictions": []}')):
                resp = await http.post(route, data=body, headers=key)
                assert resp.status == 422 and "Idempotent-Replayed" not in resp.headers, route
                assert (await resp.json())["error"] == "idempotency_key_reused"
            # the same request again, even compressed differently (a gzip header carries a time): replayed
            resp = await http.post("/v1/events", data=gzip.compress(first, mtime=12345),
                                   headers={**key, "Content-Encoding": "gzip"})
            assert resp.status == 200 and resp.headers["Idempotent-Replayed"] == "true"
            resp = await http.post("/v1/events", data=other, headers={**VIM, "Idempotency-Key": "k" * 257})
            assert resp.status == 400 and (await resp.json())["error"] == "idempotency_key_too_long"
        assert [m.value for m in await read_all(settings, EDITS)] == [first]

    asyncio.run(main())


def _report(rid: str, settled: str, consent: bool = True) -> dict:
    kept = compute_kept_rate("x = 1\n", "x = 2\n", settled)
    return {
        "request_id": rid, "settled_editable_region": settled, "ts_error_count_before_prediction": 0,
        "ts_error_count_after_prediction": 0, "can_collect_data": consent, "is_in_open_source_repo": False,
        "sample_data": {"repository_url": None, "revision": None, "editable_path": "a.py",
                        "editable_offset_range": {"start": 0, "end": 6}, "edit_events_before_quiescence": 2},
        **{f"edit_bytes_{k}": v for k, v in msgspec.structs.asdict(kept).items()},
        "example": None, "model_version": "zeta-test", "e2e_latency": 80,
    }


def test_a_zstd_zed_settled_batch_is_mapped_and_reports_without_consent_stay_out(settings: Settings) -> None:
    model = f"zeta-test-{os.getpid()}-{settings.topic_prefix}"

    async def main() -> None:
        requests = [request_event("req-1", production_model=model),
                    request_event("req-2", session="s2", production_model=model)]
        body = b"[" + b",".join(encode(r) for r in requests) + b"]"
        async with serving(settings) as (server, http):
            resp = await http.post("/predict_edits/requests", data=body, headers=ZED)
            assert resp.status == 200 and (await resp.json())["accepted"] == 2
            batch = {"predictions": [
                _report("req-1", "x = 2\n# kept\n"),
                _report("req-2", "SECRET no consent\n", consent=False),
                _report("req-3", "x = 3\n"),  # its request never came
            ]}
            payload = zstandard.ZstdCompressor().compress(json.dumps(batch).encode())
            resp = await http.post("/predict_edits/settled", data=payload,
                                   headers={**ZED, "Content-Encoding": "zstd", "Content-Type": "application/json"})
            assert resp.status == 200
            assert await resp.json() == {"accepted": 3, "settled": 1, "no_consent": 1, "unmatched_request": 1}
            assert server.join.stats.matched == 2 and server.join.stats.unmatched_reports == 1 and len(server.join) == 0
            metrics_text = await (await http.get("/metrics")).text()

        settled = [decode_settled(m.value) for m in await read_all(settings, SETTLED)]
        assert len(settled) == 1
        ex = settled[0]
        assert ex.id == region_id("s1", "a.py", "req-1")
        assert (ex.request_id, ex.original_text, ex.settled_text, ex.cursor) == ("req-1", "x = 1\n", "x = 2\n# kept\n", 5)
        assert ex.production_prediction == "x = 2\n" and ex.production_model == model
        assert ex.production_kept_rate == compute_kept_rate("x = 1\n", "x = 2\n", "x = 2\n# kept\n")
        assert ex.production_kept_rate.kept_rate == 1.0 and 0 < ex.production_kept_rate.recall_rate < 1
        letters = [decode(m.value, DeadLetter) for m in await read_all(settings, DEAD_LETTER)]
        assert [(d.reason, d.key) for d in letters] == [("unmatched_request", b"req-3")]
        everything = b""
        for topic in (SETTLED, DEAD_LETTER, EDITS):
            everything += b"".join(m.value for m in await read_all(settings, topic, 0.5))
        assert b"SECRET" not in everything  # a report without consent is stored nowhere
        assert f'settle_production_kept_rate_count{{model_version="{model}"}} 1.0' in metrics_text
        assert 'settle_zed_kept_rate_checks_total{result="agrees"}' in metrics_text  # Zed's own figure matches
        assert 'result="differs"' not in metrics_text
        # Zed's own numbers (no text) of all three reports, the one without consent included
        assert 'settle_zed_reported_kept_rate_count{model_version="zeta-test"} 3.0' in metrics_text

    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.skipif(moto_server_binary() is None, reason="needs moto[server] (an S3 server) for a persistent broker")
def test_no_acknowledged_event_is_lost_when_the_broker_restarts_during_a_burst(tmp_path: Path) -> None:
    """Tansu on S3 storage (moto's server), SIGKILLed mid-burst and restarted on the same port.

    Four clients post batches of 20 events, each post with its own Idempotency-Key, and retry a
    refused post (503) with the same key until it is accepted. Every event of every post answered
    2xx must be on `edits` afterwards; while the broker is down, posts are refused and the endpoint
    is not ready; a retried post sends only what the broker had not acknowledged (duplicates counted).
    """
    from collections import Counter

    with LocalS3(log_path=tmp_path / "s3.log") as s3:
        broker = EmbeddedBroker(storage_engine=s3.storage_engine, env=s3.broker_env,
                                log_path=tmp_path / "broker.log").start()
        try:
            settings = Settings(bootstrap=broker.bootstrap, topic_prefix="restart.", partitions=2)
            acked, refused, ready_while_down = asyncio.run(_burst_through_restart(settings, broker))
            present = Counter(m.value for m in asyncio.run(read_all(settings, EDITS, idle_s=2.0)))
        finally:
            broker.stop()
    assert refused, "some posts should have met the broker down"
    assert not ready_while_down
    missing = [v for v in acked if v not in present]
    assert len(acked) > 500 and not missing, f"{len(missing)} of {len(acked)} acknowledged events missing"
    duplicates = sum(n - 1 for n in present.values())
    # Only a post in flight at the crash can repeat (written, its acknowledgement lost with the broker;
    # Tansu has no idempotent producer to dedupe it): at most one post of 20 per client.
    assert duplicates <= 4 * 20, duplicates
    print(f"acknowledged {len(acked)} events; {refused} posts refused (503) while the broker was down and "
          f"retried with their key; all acknowledged events present, {duplicates} duplicated")


async def _burst_through_restart(settings: Settings, broker: EmbeddedBroker) -> tuple[list[bytes], int, bool]:
    acked: list[bytes] = []
    refused = 0
    phase = {"restarted": False, "after": 0}
    async with serving(settings, ack_timeout_s=2.0, rate_per_s=0) as (_, http):

        async def client(n: int) -> None:
            nonlocal refused
            seq = 0
            while not (phase["restarted"] and phase["after"] >= 20):
                lines = [encode(request_event(f"c{n}-{seq}-{i}", session=f"c{n}")) for i in range(20)]
                headers = {**VIM, "Idempotency-Key": f"c{n}-{seq}"}
                while True:  # this post until it is accepted
                    try:
                        resp = await http.post("/v1/events", data=b"\n".join(lines), headers=headers,
                                               timeout=aiohttp.ClientTimeout(total=10))
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        continue
                    if resp.status == 200:
                        break
                    assert resp.status == 503, f"unexpected {resp.status}: {await resp.text()}"
                    refused += 1
                    await asyncio.sleep(0.2)
                acked.extend(lines)
                seq += 1
                if phase["restarted"]:
                    phase["after"] += 1

        clients = [asyncio.create_task(client(n)) for n in range(4)]
        await asyncio.sleep(1.5)
        before = len(acked)
        os.kill(broker._proc.pid, signal.SIGKILL)  # noqa: SLF001  (a crash, not a clean stop)
        broker._proc.wait()  # noqa: SLF001
        await asyncio.sleep(3.0)
        ready_while_down = (await http.get("/readyz")).status == 200
        await asyncio.to_thread(broker.start)
        phase["restarted"] = True
        await asyncio.wait_for(asyncio.gather(*clients), 60)
        assert before > 0
    return acked, refused, ready_while_down


@pytest.mark.slow
def test_posted_telemetry_settles_with_kept_rates_exported_per_production_model(settings: Settings,
                                                                                tmp_path: Path) -> None:
    """Editor telemetry posted to the endpoint, settled by a real worker: every settled example with a
    production prediction carries its kept rate, and the worker's metrics count them per model version."""
    import urllib.request

    from settle.streams.local.processes import WorkerProcess
    from settle.streams.settling.reference import settle_records
    from settle.streams.simulate import SimulationConfig, simulate

    lines = [encode(e) for e in simulate(SimulationConfig(sessions=3, seed=5)) if not isinstance(e, Tick)]
    reference = {e.id: e for e in settle_records(enumerate(lines), settings.tracker).examples}
    with_prediction = [e for e in reference.values() if e.production_prediction is not None]
    assert len(with_prediction) >= 5

    async def post() -> None:
        async with serving(settings) as (_, http):
            for i in range(0, len(lines), 400):
                resp = await http.post("/v1/events", data=b"\n".join(lines[i:i + 400]), headers=VIM)
                assert resp.status == 200 and not (await resp.json())["rejected"]

    asyncio.run(post())
    port = free_port()
    worker = WorkerProcess(settings, tmp_path / "worker.log", extra_args=("--metrics-port", str(port))).start()
    try:
        deadline = time.monotonic() + 90
        settled: dict = {}
        while len(settled) < len(reference):  # same partitions, same order per buffer: the reference's examples
            assert time.monotonic() < deadline and worker.alive, worker.log_tail()
            settled = {e.id: e for e in (decode_settled(m.value) for m in asyncio.run(read_all(settings, SETTLED, 0.5)))}
        time.sleep(1.0)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        worker.stop()
    assert settled == reference
    per_model: dict[str, int] = {}
    for e in with_prediction:
        assert settled[e.id].production_kept_rate == compute_kept_rate(e.original_text, e.production_prediction,
                                                                      e.settled_text)
        per_model[e.production_model] = per_model.get(e.production_model, 0) + 1
    for model, n in per_model.items():
        assert f'settle_production_kept_rate_count{{model_version="{model}"}} {float(n)}' in metrics
        assert f'settle_production_recall_rate_count{{model_version="{model}"}} {float(n)}' in metrics
    print({m: n for m, n in per_model.items()}, "settled examples with a kept rate, by production model")
