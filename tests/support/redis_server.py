"""A throwaway redis-server on a free loopback port (never the machine's shared 6379), which a test
can stop and start again on the same port to play an outage."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from tests.support.gateway import free_port

BINARY = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if shutil.os.path.exists("/usr/bin/redis-server") else None
)


class RedisServer:
    def __init__(self) -> None:
        if BINARY is None:
            pytest.skip(
                "redis-server is not installed (apt-get install redis-server): Redis state tests need a real server"
            )
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
