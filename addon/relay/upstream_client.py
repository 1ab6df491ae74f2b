"""The retry relay's upstream HTTP/1.1 client: one keep-alive pool per origin, raw bytes both ways.

Why not httpcore: its pool re-checks every pooled connection on every request (a poll() and
getpeername() each), so at high concurrency the check alone costs more CPU than mitmproxy's whole
request handling (docs/decisions.md). The relay needs
little: send the request mitmproxy gave it byte for byte, read a status line and headers, hand the body
on chunk by chunk as it arrives, and keep the connection if the framing allows. That is this file.

- Idle connections wait in a per-origin LIFO stack; one whose peer closed or sent unasked bytes is
  dropped when taken, one idle past ``keepalive_expiry`` too.
- Body framing as RFC 9112 §6.3: no body for HEAD/1xx/204/304, chunked, Content-Length, else until close.
- Errors keep httpcore's names (ConnectError, ReadError, RemoteProtocolError, ...) because attempts
  record them and users already read them there.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator

HEAD_LIMIT = 1 << 20  # longest status line + headers accepted from an upstream
READ_SIZE = 1 << 16


class UpstreamError(Exception):
    """Base: the attempt failed on the transport before a usable answer."""


class ConnectError(UpstreamError):
    pass


class ConnectTimeout(UpstreamError):
    pass


class WriteError(UpstreamError):
    pass


class ReadError(UpstreamError):
    pass


class RemoteProtocolError(UpstreamError):
    pass


Headers = list[tuple[bytes, bytes]]


class Connection:
    def __init__(
        self, origin: tuple[str, str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float, expiry: float) -> bool:
        # The transport reads in the background: EOF or stray bytes on an idle connection show here.
        # StreamReader has no public view of unread bytes; typeshed leaves its private buffer out.
        stray = self.reader._buffer  # type: ignore[attr-defined]
        return (not self.writer.is_closing() and not self.reader.at_eof() and not stray
                and now - self.idle_since < expiry)

    def close(self) -> None:
        self.writer.transport.abort()


class Response:
    """Status and headers as sent; ``stream`` yields the body (transfer framing removed) as it arrives."""

    def __init__(self, pool: Pool, conn: Connection, status: int, reason: str, headers: Headers,
                 framing: str, length: int, keep_alive: bool) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self._pool = pool
        self._conn: Connection | None = conn  # None once closed
        self._framing, self._length, self._keep_alive = framing, length, keep_alive
        self._done = framing == "none"
        self.stream: AsyncIterator[bytes] = self._body(conn.reader)

    async def _body(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        try:
            if self._framing == "length":
                left = self._length
                while left:
                    data = await reader.read(min(left, READ_SIZE))
                    if not data:
                        raise RemoteProtocolError(f"peer closed connection with {left} body bytes outstanding")
                    left -= len(data)
                    yield data
            elif self._framing == "chunked":
                async for data in _dechunk(reader):
                    yield data
            elif self._framing == "close":
                while data := await reader.read(READ_SIZE):
                    yield data
        except asyncio.IncompleteReadError as e:
            raise RemoteProtocolError("peer closed connection without sending complete message body") from e
        except asyncio.LimitOverrunError as e:
            raise RemoteProtocolError("chunk size line too long") from e
        except OSError as e:
            raise ReadError(str(e) or type(e).__name__) from e
        self._done = True

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self._keep_alive:
            self._pool.release(conn)
        else:
            conn.close()


async def _dechunk(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise RemoteProtocolError(f"invalid chunk size line {line[:40]!r}") from None
        if size < 0:
            raise RemoteProtocolError("negative chunk size")
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers: not passed on (the relay re-frames the body)
            return
        while size:  # hand on what arrived; a big chunk need not be complete first
            data = await reader.read(min(size, READ_SIZE))
            if not data:
                raise RemoteProtocolError("peer closed connection inside a chunk")
            size -= len(data)
            yield data
        if await reader.readexactly(2) != b"\r\n":
            raise RemoteProtocolError("chunk not followed by CRLF")


def _parse_head(raw: bytes) -> tuple[int, str, Headers, bool]:
    """(status, reason, headers, http/1.1) from the bytes before the blank line."""
    status_line, *lines = raw.split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise RemoteProtocolError(f"invalid status line {status_line[:60]!r}")
    headers: Headers = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise RemoteProtocolError(f"invalid header line {line[:60]!r}")
        headers.append((name, value.strip()))
    reason = parts[2].decode("latin-1") if len(parts) == 3 else ""
    return int(parts[1]), reason, headers, parts[0] == b"HTTP/1.1"


def _framing(method: str, status: int, headers: Headers, http11: bool) -> tuple[str, int, bool]:
    """(framing, content length, keep-alive) for a response (RFC 9112 §6.3)."""
    connection = b",".join(v for k, v in headers if k.lower() == b"connection").lower()
    keep_alive = http11 and b"close" not in connection
    if method == "HEAD" or status < 200 or status in (204, 304):
        return "none", 0, keep_alive
    encodings = b",".join(v for k, v in headers if k.lower() == b"transfer-encoding").lower()
    if encodings:
        if encodings.rsplit(b",", 1)[-1].strip() == b"chunked":
            return "chunked", 0, keep_alive
        return "close", 0, False
    lengths = {v.strip() for k, v in headers if k.lower() == b"content-length"}
    if lengths:
        if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
            raise RemoteProtocolError(f"invalid content-length {sorted(lengths)!r}")
        length = int(lengths.pop())
        return ("length" if length else "none"), length, keep_alive
    return "close", 0, False


class Pool:
    def __init__(
        self, ssl_context: ssl.SSLContext, max_idle_per_origin: int = 200, keepalive_expiry: float = 60.0
    ) -> None:
        self.ssl_context = ssl_context
        self.max_idle = max_idle_per_origin
        self.expiry = keepalive_expiry
        self.idle: dict[tuple[str, str, int], collections.deque[Connection]] = {}
        self.closed = False

    async def request(self, method: str, url: str, headers: Headers, body: bytes, connect_timeout: float) -> Response:
        """Send one request; the Response is returned once the status line and headers arrived."""
        split = urllib.parse.urlsplit(url)
        scheme = split.scheme.lower()
        host = split.hostname or ""
        port = split.port or (443 if scheme == "https" else 80)
        target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        conn = await self._connection((scheme, host, port), connect_timeout)
        head = b"%s %s HTTP/1.1\r\n" % (method.encode(), target.encode("ascii", "surrogateescape"))
        head += b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
        fail: type[UpstreamError] = WriteError
        try:
            conn.writer.write(head + body if len(body) < READ_SIZE else head)
            if len(body) >= READ_SIZE:
                conn.writer.write(body)
            await conn.writer.drain()
            fail = ReadError
            while True:
                raw = await conn.reader.readuntil(b"\r\n\r\n")
                status, reason, response_headers, http11 = _parse_head(raw[:-4])
                if not (100 <= status < 200) or status == 101:
                    break  # 100 Continue / 103 Early Hints: the real answer follows
        except asyncio.IncompleteReadError as e:
            conn.close()
            raise RemoteProtocolError("Server disconnected without sending a response.") from e
        except asyncio.LimitOverrunError as e:
            conn.close()
            raise RemoteProtocolError("response head too long") from e
        except OSError as e:  # resets, broken pipes, TLS errors after the handshake
            conn.close()
            raise fail(str(e) or type(e).__name__) from e
        except BaseException:  # a timeout or cancellation: the connection is in an unknown state
            conn.close()
            raise
        try:
            framing, length, keep_alive = _framing(method, status, response_headers, http11)
        except RemoteProtocolError:
            conn.close()
            raise
        return Response(self, conn, status, reason, response_headers, framing, length, keep_alive)

    async def _connection(self, origin: tuple[str, str, int], connect_timeout: float) -> Connection:
        idle = self.idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have been closed by the peer
            if conn.usable(now, self.expiry):
                return conn
            conn.close()
        scheme, host, port = origin
        tls = scheme == "https"
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=self.ssl_context if tls else None, server_hostname=host if tls else None,
                    limit=HEAD_LIMIT)
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {host}:{port} within {connect_timeout:g}s") from None
        except (OSError, ssl.SSLError) as e:
            raise ConnectError(str(e) or type(e).__name__) from e
        return Connection(origin, reader, writer)

    def release(self, conn: Connection) -> None:
        if self.closed:
            conn.close()
            return
        idle = self.idle.setdefault(conn.origin, collections.deque())
        if len(idle) >= self.max_idle:
            idle.popleft().close()  # keep the freshest
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def aclose(self) -> None:
        self.closed = True
        for idle in self.idle.values():
            while idle:
                idle.pop().close()
        self.idle.clear()
