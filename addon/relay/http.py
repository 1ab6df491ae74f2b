"""HTTP/1.1 framing for the retry relay (addon/relay/relay.py): reading what mitmproxy sends it and writing
the answer back. mitmproxy is the relay's only client, so requests are well-formed; no pipelining."""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from addon.relay.upstream_client import Response

FRAMING = {b"content-length", b"transfer-encoding"}


async def read_head(reader: asyncio.StreamReader) -> tuple[str, list[tuple[bytes, bytes]]] | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request_line, *lines = raw[:-4].split(b"\r\n")
    method = request_line.split(b" ", 1)[0].decode("ascii")
    headers = []
    for line in lines:
        name, _, value = line.partition(b":")
        headers.append((name.strip(), value.strip()))
    return method, headers


async def read_body(reader: asyncio.StreamReader, headers: list[tuple[bytes, bytes]]) -> bytes:
    found = {k.lower(): v for k, v in headers}
    if b"chunked" in found.get(b"transfer-encoding", b"").lower():
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    length = int(found.get(b"content-length", b"0") or 0)
    return await reader.readexactly(length) if length else b""


def complete(headers: list[tuple[bytes, bytes]], body: bytes, url: str) -> list[tuple[bytes, bytes]]:
    """The headers as sent, plus what HTTP/1.1 needs when mitmproxy left it out (Host for a request
    that came in over HTTP/2, framing for a body)."""
    names = {k.lower() for k, _ in headers}
    extra = []
    if b"host" not in names:
        extra.append((b"host", urllib.parse.urlsplit(url).netloc.encode("idna")))
    if body and not names & FRAMING:
        extra.append((b"content-length", str(len(body)).encode()))
    return [*extra, *headers] if extra else headers


async def write_head(
    writer: asyncio.StreamWriter, status: int, reason: str, headers: list[tuple[bytes, bytes]]
) -> None:
    lines = [f"HTTP/1.1 {status} {reason}".encode("latin-1")]
    lines += [k + b": " + v for k, v in headers]
    writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
    await writer.drain()


async def read_all(response: Response, idle: float | None = None) -> bytes:
    """The whole body; with ``idle``, TimeoutError when no chunk comes for that many seconds."""
    if idle is None:
        return b"".join([chunk async for chunk in response.stream])
    chunks, iterator = [], aiter(response.stream)
    while True:
        async with asyncio.timeout(idle):
            try:
                chunks.append(await anext(iterator))
            except StopAsyncIteration:
                return b"".join(chunks)


def decision_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in headers:
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found
