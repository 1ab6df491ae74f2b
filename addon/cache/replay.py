"""Paced replay of cached streams (``[cache] replay_pace = "original"``).

A response made in the ``request`` hook goes out in one piece, so a stream replayed at its original
pace needs a real upstream: this tiny HTTP/1.1 server on 127.0.0.1 (started in ``running()`` on
mitmproxy's loop). CacheLookup registers the entry under a one-time token and points the hit flow at
this server with the token in a header; mitmproxy then streams the answer like any upstream's, and the
server re-emits the recorded chunks with their recorded delays (time to first token and the gaps).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from addon.cache.backend import Entry

logger = logging.getLogger(__name__)

TOKEN_HEADER = "x-corral-replay"
_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive"}


class ReplayServer:
    def __init__(self) -> None:
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.pending: dict[str, tuple[Entry, float]] = {}  # token -> (entry, request start)
        # The pace is kept with these two (epoch seconds, like the request start); tests use a fake clock.
        self.clock: Callable[[], float] = time.time
        self.sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 24)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def register(self, entry: Entry, started: float) -> str:
        token = secrets.token_hex(16)
        self.pending[token] = (entry, started)
        # A flow that never reaches us (client gone) must not leak its entry.
        asyncio.get_running_loop().call_later(120, self.pending.pop, token, None)
        return token

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client (mitmproxy) went away: the flow's error hook records the abort
        except Exception:
            logger.exception("corral: cache replay failed")
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if length:
            await reader.readexactly(length)
        found = self.pending.pop(headers.get(TOKEN_HEADER, ""), None)
        if found is None:
            writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
            return False
        entry, started = found
        await self._sleep_until(started + entry.headers_at)
        lines = [f"HTTP/1.1 {entry.status} OK"]
        lines += [f"{k}: {v}" for k, v in entry.headers if k.lower() not in _HOP]
        lines.append("transfer-encoding: chunked")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace"))
        await writer.drain()
        for offset, piece in entry.pieces():
            await self._sleep_until(started + offset)
            if piece:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _sleep_until(self, at: float) -> None:
        delay = at - self.clock()
        if delay > 0:
            await self.sleep(delay)
