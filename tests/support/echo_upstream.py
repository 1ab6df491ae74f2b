"""An upstream that writes down exactly what it received and answers by script, for the fidelity tests.

Every request is kept as it arrived on the wire after the framing is undone: method, target (path and
query), header fields in order, body bytes. The answer is chosen by the request's ``x-fid-reply``
header (see ``REPLIES``), never by anything Corral could change, so the same request gets the same
answer direct and through Corral. ``hold`` holds a streamed answer after its first chunk until the test
releases it (once its client has that chunk): a gateway that buffered the body would never deliver it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable

USAGE_CHUNK = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'  # noqa: E501
SSE_EVENTS = [
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n',  # noqa: E501
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}\n\n',  # noqa: E501
]
DONE = b"data: [DONE]\n\n"


def binary(size: int, seed: bytes = b"corral") -> bytes:
    """Deterministic bytes that are not text (every byte value occurs)."""
    out = bytearray()
    block = seed
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


DOWNLOAD = binary(3 << 20, b"big")  # larger than what Corral may hold whole (addon/delivery.py)


@dataclasses.dataclass
class Received:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


@dataclasses.dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    chunks: list[bytes]  # one element and content-length framing unless chunked
    chunked: bool = False
    hold: threading.Event | None = None


def _json(status: int, doc: object) -> Answer:
    body = json.dumps(doc).encode()
    return Answer(status, [("content-type", "application/json")], [body])


def _sse(received: Received, chunked: bool) -> Answer:
    asked = b'"include_usage":true' in received.body.replace(b" ", b"")
    events = [*SSE_EVENTS, *([USAGE_CHUNK] if asked else []), DONE]
    headers = [("content-type", "text/event-stream")]
    if chunked:
        return Answer(200, headers, events, chunked=True)
    return Answer(200, headers, [b"".join(events)])


REPLIES: dict[str, Callable[[Received], Answer]] = {
    # A resource: id, object, no model field (the record takes the request's).
    "json": lambda r: _json(200, {"id": "obj_1", "object": "thing", "ok": True}),
    # 2xx resources that carry an "error" field by design: not a failed exchange.
    "resource-error": lambda r: _json(200, {"id": "resp_1", "object": "response", "status": "failed",
                                            "error": {"code": "server_error", "message": "job failed"}}),
    "resource-error-null": lambda r: _json(200, {"id": "ftjob_1", "object": "fine_tuning.job", "error": None}),
    # An error envelope inside a 200: a failure.
    "envelope-error": lambda r: _json(200, {"error": {"message": "bad things", "type": "server_error"}}),
    "http-error": lambda r: _json(400, {"error": {"message": "nope", "type": "invalid_request_error"}}),
    "sse": lambda r: _sse(r, chunked=True),
    "sse-content-length": lambda r: _sse(r, chunked=False),
    "empty": lambda r: Answer(204, [], [b""]),
    "audio": lambda r: Answer(200, [("content-type", "audio/mpeg")], [binary(3000, b"a")]),
    "chunked-binary": lambda r: Answer(200, [("content-type", "audio/mpeg")],
                                       [binary(4096, b"first"), binary(60000, b"rest")], chunked=True),
    "download": lambda r: Answer(200, [("content-type", "application/octet-stream")], [DOWNLOAD]),
    "chunked-json": lambda r: Answer(200, [("content-type", "application/json")],
                                     [b'{"id":"obj_2","object":"list",', b'"data":[]}'], chunked=True),
}


class EchoUpstream:
    def __init__(self) -> None:
        self.received: dict[str, Received] = {}  # by x-test-id
        self.hold: threading.Event | None = None  # set by a test: the next held answer waits on it
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="echo-upstream", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> EchoUpstream:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                received = await _read(reader)
                if received is None:
                    return
                tag = received.header("x-test-id") or ""
                self.received[tag] = received
                answer = REPLIES[received.header("x-fid-reply") or "json"](received)
                if received.header("x-fid-hold") and self.hold is not None:
                    answer.hold = self.hold
                await _write(writer, received, answer)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def _read(reader: asyncio.StreamReader) -> Received | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
    fields = {k.lower(): v for k, v in headers}
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        data = bytes(body)
    else:
        data = await reader.readexactly(int(fields.get("content-length", "0")))
    return Received(method, target, headers, data)


async def _write(writer: asyncio.StreamWriter, received: Received, answer: Answer) -> None:
    head = [f"HTTP/1.1 {answer.status} X"]
    head += [f"{k}: {v}" for k, v in answer.headers]
    body_allowed = answer.status not in (204, 304)
    if answer.chunked:
        head.append("transfer-encoding: chunked")
    elif body_allowed:
        head.append(f"content-length: {sum(len(c) for c in answer.chunks)}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    if received.method == "HEAD" or not body_allowed:
        await writer.drain()
        return
    for i, chunk in enumerate(answer.chunks):
        if i == 1 and answer.hold is not None:
            await writer.drain()
            await asyncio.to_thread(answer.hold.wait, 30)
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if answer.chunked else chunk)
        await writer.drain()
    if answer.chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()
