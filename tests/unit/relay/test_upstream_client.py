"""The relay's upstream client (addon/relay/upstream_client.py) against a raw socket server that answers
with scripted bytes: body framing, keep-alive reuse, stale connections, and protocol errors."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from addon.relay.upstream_client import ConnectError, ConnectTimeout, Pool, ReadError, RemoteProtocolError
from tests.support.scripted import Scripted, reset
from tests.support.waiting import until_async


def pool() -> Pool:
    return Pool(ssl.create_default_context())


async def fetch(p: Pool, url: str, method: str = "POST", body: bytes = b"{}") -> tuple[int, list, bytes]:
    headers = [(b"host", b"upstream"), (b"content-length", str(len(body)).encode())]
    response = await p.request(method, url + "/v1/x?q=1", headers, body, connect_timeout=5)
    try:
        data = b"".join([chunk async for chunk in response.stream])
    finally:
        await response.aclose()
    return response.status, response.headers, data


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("reply, body", [
    (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", b"hello"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
     b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nx-trailer: y\r\n\r\n", b"hello!"),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", b"ok"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
])
def test_framings_decode_and_the_connection_is_reused(reply: bytes, body: bytes) -> None:
    async def go() -> None:
        async with Scripted([reply, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]) as s:
            p = pool()
            status, _, data = await fetch(p, s.url)
            assert (status, data) == (int(reply.split(b" ")[1]) if b"100" not in reply[:12] else 200, body)
            assert (await fetch(p, s.url))[2] == b"ok"
            assert s.connections == 1  # kept alive and taken again
            assert s.requests[0].startswith(b"POST /v1/x?q=1 HTTP/1.1\r\nhost: upstream\r\n")
            await p.aclose()
    run(go())


def test_body_until_close_and_connection_close_are_not_reused() -> None:
    async def go() -> None:
        async with Scripted([b"HTTP/1.1 200 OK\r\n\r\nuntil close", ]) as s:
            p = pool()
            assert (await fetch(p, s.url))[2] == b"until close"
            assert not any(p.idle.values())
        async with Scripted([b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx"]) as s:
            p = pool()
            assert (await fetch(p, s.url))[2] == b"x"
            assert not any(p.idle.values())
    run(go())


def test_head_response_has_no_body_despite_content_length() -> None:
    async def go() -> None:
        async with Scripted([b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n",
                             b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nz"]) as s:
            p = pool()
            assert await fetch(p, s.url, method="HEAD", body=b"") == (200, [(b"content-length", b"99")], b"")
            assert (await fetch(p, s.url))[2] == b"z"
            assert s.connections == 1
    run(go())


def test_a_connection_the_peer_closed_while_idle_is_not_used() -> None:
    async def go() -> None:
        replies = [b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na"]
        async with Scripted(replies) as s:  # serves one reply, then closes the connection
            p = pool()
            assert (await fetch(p, s.url))[2] == b"a"
            [idle] = [conn for conns in p.idle.values() for conn in conns]
            await until_async(idle.reader.at_eof)  # the server's close arrives while it is idle in the pool
            s.replies.append(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb")
            assert (await fetch(p, s.url))[2] == b"b"
            assert s.connections == 2
    run(go())


def test_partial_chunks_are_handed_on_before_the_chunk_completes() -> None:
    async def go() -> None:
        got_first = asyncio.Event()

        async def half_then_rest(writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\n12345678")
            await writer.drain()
            await got_first.wait()  # the rest only once the client has the first half
            writer.write(b"abcdefgh\r\n0\r\n\r\n")
            await writer.drain()

        async with Scripted([half_then_rest]) as s:
            p = pool()
            response = await p.request("GET", s.url, [(b"host", b"x")], b"", connect_timeout=5)
            first = await asyncio.wait_for(anext(response.stream), 10)
            got_first.set()
            assert first == b"12345678"
            assert b"".join([c async for c in response.stream]) == b"abcdefgh"
            await response.aclose()
    run(go())


@pytest.mark.parametrize("reply, error", [
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", RemoteProtocolError),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n", RemoteProtocolError),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", RemoteProtocolError),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx", RemoteProtocolError),
    (b"HTTP/1.1 2000 Huh\r\n\r\n", RemoteProtocolError),
    (b"garbage\r\n\r\n", RemoteProtocolError),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", RemoteProtocolError),
    (b"", RemoteProtocolError),  # closed before any answer
])
def test_protocol_errors(reply: bytes, error: type[Exception]) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(reply)
        await writer.drain()

    async def go() -> None:
        async with Scripted([answer]) as s:
            with pytest.raises(error):
                await fetch(pool(), s.url)
    run(go())


def test_reset_is_a_read_error_and_refused_a_connect_error() -> None:
    async def go() -> None:
        async with Scripted([reset]) as s:
            with pytest.raises((ReadError, RemoteProtocolError)):
                await fetch(pool(), s.url)
            url = s.url
        with pytest.raises(ConnectError):
            await fetch(pool(), url)  # nobody listens any more
    run(go())


def test_connect_timeout() -> None:
    """A loopback listener whose accept queue is full drops new SYNs: the connect hangs until the timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)

    async def go() -> None:
        with pytest.raises(ConnectTimeout):
            await pool().request("GET", f"http://127.0.0.1:{port}/", [], b"", connect_timeout=0.3)
    try:
        run(go())
    finally:
        for s in fillers:
            s.close()
        listener.close()
