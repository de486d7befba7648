"""Every kind of settle client over real TLS, with the CA from SETTLE_SSL_CAFILE.

Tansu 0.6.0 (the embedded broker) cannot serve TLS or SASL itself here, tried on
2026-11-29: its `--cert` and `--key` options are mutually exclusive and `--cert` alone
(certificate and key in one PEM) leaves the listener in plaintext. With `--authentication`
on, `tansu user create` is refused (NotAuthenticated); created on a broker without it,
the user is not persisted (the memory engine; on the s3 engine over moto the bucket stays
empty) and an authenticating broker on the same storage answers SCRAM with
`e=unknown-user`; the postgres, libsql and slatedb engines are not compiled into this
binary (`FeatureNotEnabled`).
So TLS is terminated in front of it, as a load balancer or stunnel would: Tansu
advertises the terminator's port, every client speaks TLS to it and must verify the
broker's certificate against the test CA. SASL is covered by the builders' tests.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from settle.schemas.codecs import encode
from settle.schemas.models import ModelPublished
from settle.streams.kafka.io import committed_offsets, produce_dead_letters, produce_lines, read_topic
from settle.streams.kafka.topics import ensure_topics_sync
from settle.streams.local.broker import broker_binary, free_port
from settle.streams.local.processes import WorkerProcess
from settle.streams.records import Consumed, dead_letter
from settle.streams.settings import DEAD_LETTER, EDITS, SETTLED, Settings
from settle.streams.settling.reference import settle_records
from settle.streams.simulate import SimulationConfig, simulate

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _certificates(d: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key): a test CA that signed 127.0.0.1's certificate."""
    ca_key, ca, key, csr, cert, ext = (d / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem", "ext"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "1",
             "-subj", "/CN=settle-test-ca")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "1", "-extfile", str(ext))
    return ca, cert, key


class TlsTerminator:
    """Accept TLS on ``port`` and pipe the plaintext to the broker, one connection per client connection."""

    def __init__(self, port: int, upstream: int, cert: Path, key: Path) -> None:
        self.port, self.upstream = port, upstream
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        self.handshakes = 0
        self.failed_handshakes = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def start(self) -> "TlsTerminator":
        def on_error(loop: asyncio.AbstractEventLoop, ctx: dict) -> None:
            self.failed_handshakes += 1  # a plaintext client or one that refused our certificate

        async def serve() -> None:
            self.loop.set_exception_handler(on_error)
            self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port, ssl=self.context)

        self._thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(bootstrap of the TLS port, CA file): Tansu behind a TLS terminator it advertises."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl binary to make certificates")
    d = tmp_path_factory.mktemp("tls")
    ca, cert, key = _certificates(d)
    inner, outer = free_port(), free_port()
    log = open(d / "broker.log", "wb")
    proc = subprocess.Popen(
        [str(broker_binary()), "broker", "--listener-url", f"tcp://127.0.0.1:{inner}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{outer}", "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    terminator = TlsTerminator(outer, inner, cert, key).start()
    try:
        deadline = time.monotonic() + 20
        while True:  # ready once a TLS client gets metadata through the terminator
            try:
                ensure_topics_sync(Settings(bootstrap=f"127.0.0.1:{outer}", security_protocol="SSL",
                                            ssl_cafile=str(ca), topic_prefix="ready."), ("models",))
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield f"127.0.0.1:{outer}", ca
    finally:
        terminator.stop()
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def tls_settings(tls_broker: tuple[str, Path], tmp_path: Path) -> Settings:
    bootstrap, ca = tls_broker
    return Settings(bootstrap=bootstrap, security_protocol="SSL", ssl_cafile=str(ca), topic_prefix=f"tls{tmp_path.name}.",
                    group_prefix=f"tls{tmp_path.name}", data_dir=tmp_path / "worker", partitions=2)


def test_plain_aiokafka_clients_speak_tls_and_verify_the_broker(tls_settings: Settings) -> None:
    from settle.trainer.publish.registry import announce, history

    s = tls_settings
    assert set(ensure_topics_sync(s)) == {s.topic(n) for n in ("edits", "settled", "scored", "kept", "dead-letter", "models")}
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=2, seed=3))]
    sent = asyncio.run(produce_lines(s, lines))  # a tick goes to every partition
    assert sent >= len(lines)
    assert len(asyncio.run(read_topic(s, EDITS, idle_s=1.0, group_id="tls-reader"))) == sent
    assert sum(1 for _ in asyncio.run(committed_offsets(s, "tls-reader")).values()) == s.partitions
    letter = dead_letter(Consumed(s.topic(EDITS), 0, 0, None, b"x"), "malformed", "test", "tls")
    assert asyncio.run(produce_dead_letters(s, [letter])) == 1
    assert len(asyncio.run(read_topic(s, DEAD_LETTER, idle_s=1.0))) == 1
    message = ModelPublished(name="student", version="v0001", status="published", location="/m", created_at_ms=1)
    asyncio.run(announce(s, message))
    assert [m.version for m in asyncio.run(history(s))] == ["v0001"]


def test_a_client_without_tls_or_with_another_ca_gets_nothing(tls_settings: Settings, tmp_path: Path) -> None:
    from aiokafka.errors import KafkaConnectionError

    plaintext = replace(tls_settings, security_protocol="PLAINTEXT", ssl_cafile="")
    with pytest.raises(KafkaConnectionError):
        ensure_topics_sync(plaintext)
    other_ca = replace(tls_settings, ssl_cafile="")  # the system's CAs did not sign the test broker
    with pytest.raises(KafkaConnectionError):
        ensure_topics_sync(other_ca)


def test_a_faust_settle_worker_settles_over_tls(tls_settings: Settings, tmp_path: Path) -> None:
    s = tls_settings
    ensure_topics_sync(s)
    lines = [encode(e) for e in simulate(SimulationConfig(sessions=3, seed=5))]
    expected = {e.id for e in settle_records(enumerate(lines), s.tracker).examples}
    assert expected
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        asyncio.run(produce_lines(s, lines))
        deadline = time.monotonic() + 60
        got: set[str] = set()
        while got != expected:
            assert worker.alive and time.monotonic() < deadline, (len(got), len(expected), worker.log_tail())
            import msgspec

            got = {msgspec.json.decode(r.value)["id"] for r in asyncio.run(read_topic(s, SETTLED, idle_s=1.0))}
    finally:
        worker.stop()
