"""A real, throwaway ``redis-server`` for tests: on a free local port, nothing persisted, stopped at the end.

Without the binary the test is skipped, unless ``SEQFRAUD_REQUIRE_REDIS=1`` (CI sets it): then it fails, so
that the Redis backend can never go untested there by accident.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REQUIRE_ENV = "SEQFRAUD_REQUIRE_REDIS"


class RedisServer:
    """One ``redis-server`` process; :meth:`stop` and :meth:`pause` make it down or hung mid-test."""

    def __init__(self, binary: str, directory: Path):
        self.binary, self.directory = binary, directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start (again, on the same port and so the same URL) and wait until it answers PING."""
        log = self.directory / "redis.log"
        self._process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(self.directory), "--logfile", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while not self._answers_ping():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                text = log.read_text() if log.exists() else "(no log)"
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{text[-2000:]}")
            time.sleep(0.02)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill it (no clean shutdown: a crash is what a client sees as 'down')."""
        if self._process is not None:
            self.resume()
            self._process.kill()
            self._process.wait()
            self._process = None

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers, a hung Redis."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    """A started server, its files under ``directory``; skips (or fails, in CI) without ``redis-server``."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = (
            "redis-server is not installed (apt-get install redis-server): the Redis backend is untested"
        )
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {message}")
        pytest.skip(message)
    server = RedisServer(binary, directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
