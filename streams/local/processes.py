"""Worker processes started and stopped by the demo, the tests and the benchmarks.

A worker is a real OS process (`settle worker`), so a test can SIGKILL it at
any instant, exactly as a crashed machine would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from settle.streams.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The SETTLE_* environment that reproduces ``settings`` in a child process."""
    return {f"SETTLE_{f.name.upper()}": str(getattr(settings, f.name)) for f in fields(settings)}


@dataclass
class WorkerProcess:
    settings: Settings
    log_path: Path
    command: str = "worker"
    extra_args: tuple[str, ...] = ()
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> "WorkerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings_env(self.settings), "PYTHONUNBUFFERED": "1"}
        log = open(self.log_path, "wb")  # a fresh log per start: callers grep it
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "settle.streams.cli", self.command, *self.extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        return self

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit; what a crash looks like."""
        if self._proc is not None and self.alive:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()

    def stop(self, timeout_s: float = 15.0) -> None:
        if self._proc is None or not self.alive:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""
