"""A lean OpenAI-compatible upstream for the benchmark: raw asyncio, HTTP/1.1 keep-alive.

It must never be the bottleneck, so the no-latency JSON path answers synchronously inside
``data_received``; the bench reports "direct" figures against it so that can be checked.

POST <anything>  -> chat completion: JSON with usage, or an SSE stream when the body says
                    ``"stream": true`` (a usage chunk when ``"include_usage": true``, then
                    ``data: [DONE]``).
POST .../v1/messages -> the same as an Anthropic Messages answer (JSON, or its SSE events), for
                    Corral's unified endpoint translating to Anthropic.
POST /v1/traces, /v1/metrics -> 200, empty: an OTLP/HTTP sink for Corral's telemetry export.
GET  /health     -> 200 ok
GET  /__stats    -> {"requests": n, "streams": n, "open": n}

Per-request behaviour comes from the *model name*, so it survives every gateway (LiteLLM rewrites
headers, but passes the model on): tokens after the first ``-`` are ``l<ms>`` (latency before the
response headers), ``d<ms>`` (delay between stream chunks) and ``n<count>`` (content chunks), e.g.
``bench-l300`` or ``bench-d5-n10``. Command-line flags set the defaults.

    python bench/mock.py --port 9100 [--latency-ms 0] [--chunk-delay-ms 0] [--chunks 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import socket

MODEL_RE = re.compile(rb'"model"\s*:\s*"([^"]{1,200})"')
STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
USAGE_RE = re.compile(rb'"include_usage"\s*:\s*true')


class Settings:
    def __init__(self, latency_ms: float = 0.0, chunk_delay_ms: float = 0.0, chunks: int = 8) -> None:
        self.latency_ms = latency_ms
        self.chunk_delay_ms = chunk_delay_ms
        self.chunks = chunks
        self.requests = 0
        self.streams = 0
        self.open = 0
        self._profiles: dict[bytes, tuple[str, float, float, int]] = {}

    def profile(self, model: bytes) -> tuple[str, float, float, int]:
        """(model, latency s, chunk delay s, chunks) for a model name; cached."""
        found = self._profiles.get(model)
        if found is None:
            latency, delay, chunks = self.latency_ms, self.chunk_delay_ms, self.chunks
            for token in model.decode("utf-8", "replace").split("-")[1:]:
                kind, num = token[:1], token[1:]
                if not num.replace(".", "", 1).isdigit():
                    continue
                if kind == "l":
                    latency = float(num)
                elif kind == "d":
                    delay = float(num)
                elif kind == "n":
                    chunks = max(1, int(float(num)))
            found = (model.decode("utf-8", "replace"), latency / 1000, delay / 1000, chunks)
            if len(self._profiles) < 1000:
                self._profiles[model] = found
        return found


def completion_json(model: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the bench mock."},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }, separators=(",", ":")).encode()


def sse_events(model: str, chunks: int, include_usage: bool) -> list[bytes]:
    def event(delta: dict, finish: str | None = None, usage: dict | None = None, choices: bool = True) -> bytes:
        body: dict = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []}
        if usage is not None:
            body["usage"] = usage
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    events = [event({"role": "assistant", "content": "tok0 "})]
    events += [event({"content": f"tok{i} "}) for i in range(1, chunks)]
    events.append(event({}, "stop"))
    if include_usage:
        events.append(event({}, usage={"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks},
                            choices=False))
    events.append(b"data: [DONE]\n\n")
    return events


def anthropic_json(model: str) -> bytes:
    return json.dumps({
        "id": "msg_bench", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "Hello from the bench mock."}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 7},
    }, separators=(",", ":")).encode()


def anthropic_events(model: str, chunks: int) -> list[bytes]:
    def event(kind: str, data: dict) -> bytes:
        return b"event: %s\ndata: %s\n\n" % (kind.encode(), json.dumps({"type": kind, **data},
                                                                        separators=(",", ":")).encode())

    events = [event("message_start", {"message": {
        "id": "msg_bench", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})]
    events += [event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": f"tok{i} "}})
               for i in range(chunks)]
    events += [event("content_block_stop", {"index": 0}),
               event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                       "usage": {"output_tokens": chunks}}),
               event("message_stop", {})]
    return events


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# Responses being written later; the loop holds tasks only weakly.
_RESPONDING: set[asyncio.Task[None]] = set()


class MockProtocol(asyncio.Protocol):
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # an async response is being written; later requests wait (pipelining)
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.s.open += 1

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.s.open -= 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.process()

    def process(self) -> None:
        while not self.busy and not self.closed:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) < 3:
                self.reply(400, b"bad request line", close=True)
                return
            method, path = parts[0], parts[1]
            length = 0
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip() or 0)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
                elif name == "transfer-encoding":
                    self.reply(411, b"chunked request bodies are not supported", close=True)
                    return
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4:end + 4 + length])
            del self.buf[:end + 4 + length]
            self.handle(method, path, body, close)

    def reply(self, status: int, body: bytes, ctype: str = "text/plain", close: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required"}.get(status, "X")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n%s"
            % (status, reason.encode(), ctype.encode(), len(body),
               b"connection: close\r\n" if close else b"", body))
        if close:
            self.transport.close()

    def handle(self, method: str, path: str, body: bytes, close: bool) -> None:
        if method == "GET":
            if path == "/__stats":
                stats = {"requests": self.s.requests, "streams": self.s.streams, "open": self.s.open}
                self.reply(200, json.dumps(stats).encode(), "application/json", close)
            else:
                self.reply(200, b"ok", close=close)
            return
        if path in ("/v1/traces", "/v1/metrics"):  # OTLP/HTTP export: accepted, nothing kept
            self.reply(200, b"", "application/x-protobuf", close)
            return
        self.s.requests += 1
        found = MODEL_RE.search(body)
        model, latency, delay, chunks = self.s.profile(found.group(1) if found else b"bench")
        stream = STREAM_RE.search(body) is not None
        anthropic = path.split("?", 1)[0].endswith("/v1/messages")
        if not stream and latency <= 0:
            self.reply(200, (anthropic_json if anthropic else completion_json)(model), "application/json", close)
            return
        self.busy = True
        task = asyncio.get_running_loop().create_task(
            self.respond_later(model, latency, delay, chunks, stream, USAGE_RE.search(body) is not None, close,
                               anthropic))
        _RESPONDING.add(task)
        task.add_done_callback(_RESPONDING.discard)

    async def respond_later(self, model: str, latency: float, delay: float, chunks: int,
                            stream: bool, include_usage: bool, close: bool, anthropic: bool = False) -> None:
        try:
            if latency > 0:
                await asyncio.sleep(latency)
            if not stream:
                self.reply(200, (anthropic_json if anthropic else completion_json)(model), "application/json", close)
                return
            self.s.streams += 1
            t = self.transport
            if t is None or t.is_closing():
                return
            t.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                    b"transfer-encoding: chunked\r\n%s\r\n" % (b"connection: close\r\n" if close else b""))
            events = anthropic_events(model, chunks) if anthropic else sse_events(model, chunks, include_usage)
            for i, event in enumerate(events):
                if i and delay > 0:
                    await asyncio.sleep(delay)
                if t.is_closing():
                    return
                t.write(chunk(event))
            t.write(b"0\r\n\r\n")
            if close:
                t.close()
        finally:
            self.busy = False
            if self.buf and not self.closed:
                self.process()


async def serve(host: str, port: int, settings: Settings, ready: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(settings), host, port, backlog=4096, reuse_address=True)
    for sock in server.sockets:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ready is not None:
        ready.set()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (RuntimeError, ValueError):  # not the main thread (tests run it in a thread)
            pass
    try:
        await stop.wait()
    finally:
        # Closing the server waits for every client connection to end; a kept-alive one never
        # would, so they are closed first (Server.close_clients is Python 3.13+).
        server.close()
        if hasattr(server, "close_clients"):
            server.close_clients()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--chunk-delay-ms", type=float, default=0.0)
    p.add_argument("--chunks", type=int, default=8)
    a = p.parse_args()
    asyncio.run(serve(a.host, a.port, Settings(a.latency_ms, a.chunk_delay_ms, a.chunks)))


if __name__ == "__main__":
    main()
