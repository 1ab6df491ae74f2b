"""An upstream on the test's own event loop that answers with scripted bytes, for in-process tests.

Each accepted connection reads requests and answers them from ``replies`` in turn. A reply is bytes
(written as is), or a callable taking the writer for anything else: a reset, a close, a stall, or a
stream that waits for the test before it goes on. ``requests`` holds what arrived, ``connections``
counts the connections accepted.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Callable

Reply = bytes | Callable[[asyncio.StreamWriter], object]


class Scripted:
    def __init__(self, replies: list[Reply] | None = None) -> None:
        self.replies: list[Reply] = list(replies or [])
        self.connections = 0
        self.requests: list[bytes] = []
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while self.replies:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                reply = self.replies.pop(0)
                if callable(reply):
                    result = reply(writer)
                    if asyncio.iscoroutine(result):
                        await result
                    return
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)


def reset(writer: asyncio.StreamWriter) -> None:
    """Answer with a TCP reset (SO_LINGER 0: close sends RST instead of FIN)."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def close(writer: asyncio.StreamWriter) -> None:
    """Close the connection without a byte of answer."""
    writer.close()


async def never(writer: asyncio.StreamWriter) -> None:
    """Take the request and never answer (until the client gives up)."""
    await asyncio.Event().wait()


def response(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    fields = {"content-type": "application/json", **(headers or {}), "content-length": str(len(body))}
    lines = [f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}", *(f"{k}: {v}" for k, v in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def error(status: int, **headers: str) -> bytes:
    body = json.dumps({"error": {"message": f"scripted {status}", "type": "server_error"}}).encode()
    return response(status, body, {k.replace("_", "-"): v for k, v in headers.items()})


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
