"""A local webhook receiver (asyncio, on a thread of its own) for budget alert tests.

``mode``: "ok" answers 204 and keeps each JSON body in ``events``; "hang" accepts the connection, reads
the request and never answers (``hung`` counts such requests); "fail" answers 503, "refuse" 404. Tests
wait for what they expect with ``wait_events``/``wait_hung`` (a condition, no sleeps).
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any


class WebhookReceiver:
    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.events: list[dict[str, Any]] = []
        self.hung = 0
        self.port = 0
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook/secret-path"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            for writer in self._writers:
                writer.close()
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                if self.mode == "hang":
                    with self._changed:
                        self.hung += 1
                        self._changed.notify_all()
                    await asyncio.Event().wait()  # never answers
                if self.mode in ("fail", "refuse"):
                    status = b"503 Service Unavailable" if self.mode == "fail" else b"404 Not Found"
                    writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                with self._changed:
                    self.events.append(json.loads(body))
                    self._changed.notify_all()
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def wait_events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.events) >= count, timeout):
                raise AssertionError(f"expected {count} webhook events, got {self.events}")
            return list(self.events)

    def wait_hung(self, count: int = 1, timeout: float = 10.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.hung >= count, timeout):
                raise AssertionError(f"expected {count} requests held by the hanging webhook, got {self.hung}")
