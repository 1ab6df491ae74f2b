"""Small asyncio HTTP/1.1 client for what wrk cannot measure: stream time-to-first-byte, open-stream
counts, and exact request counts (for "rows recorded == requests sent").

Raw sockets (no httpx) so the client costs little CPU on a 2-core box: it shares the machine with the
gateway under test. Each worker keeps one keep-alive connection, like an SDK's pool.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    status: int = 0
    ttfb: float | None = None  # seconds from request written to first body byte
    total: float | None = None  # seconds to the end of the body
    complete: bool = False  # JSON parsed / stream reached data: [DONE]
    error: str | None = None
    started: float = 0.0  # perf_counter() when the request was written (after any connect)


def request_bytes(host: str, port: int, path: str, body: bytes, extra: dict[str, str] | None = None) -> bytes:
    extra = extra or {}
    # A system's own Authorization (a gateway key) replaces the bench's placeholder provider key.
    own = any(k.lower() == "authorization" for k in extra)
    auth = "" if own else "authorization: Bearer sk-bench-not-a-real-key\r\n"
    head = (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"{auth}content-length: {len(body)}\r\n")
    for k, v in extra.items():
        head += f"{k}: {v}\r\n"
    return head.encode() + b"\r\n" + body


def chat_body(model: str, stream: bool) -> bytes:
    body: dict = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def ensure(self) -> None:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def exchange(self, raw: bytes, on_headers=None) -> Result:
        res = Result()
        try:
            await self.ensure()
            assert self.reader is not None and self.writer is not None
            t0 = res.started = time.perf_counter()
            self.writer.write(raw)
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            res.status = int(lines[0].split(" ")[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            if on_headers is not None:
                on_headers()
            body = bytearray()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size_line = await self.reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        await self.reader.readuntil(b"\r\n")  # end of (empty) trailers
                        break
                    data = await self.reader.readexactly(size + 2)
                    if res.ttfb is None:
                        res.ttfb = time.perf_counter() - t0
                    body += data[:-2]
            elif "content-length" in headers:
                n = int(headers["content-length"])
                if n:
                    first = await self.reader.read(n)
                    if not first:
                        raise asyncio.IncompleteReadError(b"", n)
                    res.ttfb = time.perf_counter() - t0
                    body += first
                    if len(first) < n:
                        body += await self.reader.readexactly(n - len(first))
            else:  # read to close
                body += await self.reader.read()
                res.ttfb = time.perf_counter() - t0
                self.close()
            res.total = time.perf_counter() - t0
            if headers.get("connection", "").lower() == "close":
                self.close()
            if 200 <= res.status < 300:
                if b"data: [DONE]" in body or body.lstrip().startswith(b"{"):
                    res.complete = True
                else:
                    res.error = "incomplete body"
            else:
                res.error = f"HTTP {res.status}"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
            res.error = f"{type(e).__name__}: {e}"[:200]
            self.close()
        return res


@dataclass
class RunStats:
    results: list[Result] = field(default_factory=list)
    elapsed: float = 0.0
    sent: int = 0
    peak_open: int = 0


async def timed_run(host: str, port: int, path: str, body: bytes, concurrency: int, duration: float,
                    extra: dict[str, str] | None = None) -> RunStats:
    """``concurrency`` workers, each sending request after request for ``duration`` seconds."""
    raw = request_bytes(host, port, path, body, extra)
    stats = RunStats()
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        conn = Conn(host, port)
        while time.perf_counter() < deadline:
            stats.sent += 1
            stats.results.append(await conn.exchange(raw))
        conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    stats.elapsed = time.perf_counter() - t0
    return stats


async def paced_run(host: str, port: int, path: str, body: bytes, rate: float, duration: float, connections: int = 4,
                    extra: dict[str, str] | None = None) -> RunStats:
    """``rate`` requests per second for ``duration`` seconds, each sent at its own time (request i at
    i / rate) on one of ``connections`` keep-alive connections; late when all are busy, never skipped.
    Gateways compared at one rate spread their periodic work (timers, batched writes) over as many
    requests each, whatever CPU share the machine gives them."""
    raw = request_bytes(host, port, path, body, extra)
    stats = RunStats()
    total = max(1, int(rate * duration))
    t0 = time.perf_counter()
    slots = iter(range(total))

    async def worker() -> None:
        conn = Conn(host, port)
        for i in slots:
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            stats.sent += 1
            stats.results.append(await conn.exchange(raw))
        conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    stats.elapsed = time.perf_counter() - t0
    return stats


async def counted_run(host: str, port: int, path: str, bodies: list[bytes], concurrency: int,
                      extra: dict[str, str] | None = None) -> RunStats:
    """Exactly ``len(bodies)`` requests over ``concurrency`` keep-alive connections."""
    stats = RunStats()
    queue = list(reversed(bodies))

    async def worker() -> None:
        conn = Conn(host, port)
        while queue:
            body = queue.pop()
            stats.sent += 1
            stats.results.append(await conn.exchange(request_bytes(host, port, path, body, extra)))
        conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    stats.elapsed = time.perf_counter() - t0
    return stats


async def open_streams(host: str, port: int, path: str, body: bytes, count: int, ramp: float,
                       sample=None, stream_timeout: float = 60.0, extra: dict[str, str] | None = None) -> RunStats:
    """``count`` streams opened over ``ramp`` seconds, all held open at once; ``sample()`` is called
    every 50 ms while they run (the bench reads the gateway's RSS there)."""
    raw = request_bytes(host, port, path, body, extra)
    stats = RunStats()
    open_now = 0

    async def one(i: int) -> None:
        nonlocal open_now
        await asyncio.sleep(ramp * i / count)
        conn = Conn(host, port)
        opened = False

        def on_headers() -> None:
            nonlocal open_now, opened
            opened = True
            open_now += 1
            stats.peak_open = max(stats.peak_open, open_now)

        stats.sent += 1
        try:
            res = await asyncio.wait_for(conn.exchange(raw, on_headers), stream_timeout)
        except TimeoutError:
            res = Result(error="timeout")
        if opened:
            open_now -= 1
        conn.close()
        stats.results.append(res)

    async def sampler() -> None:
        while True:
            if sample is not None:
                sample()
            await asyncio.sleep(0.05)

    t0 = time.perf_counter()
    task = asyncio.create_task(sampler())
    await asyncio.gather(*(one(i) for i in range(count)))
    task.cancel()
    stats.elapsed = time.perf_counter() - t0
    return stats


@dataclass
class ConnStats:
    """Seconds per request, by kind: ``json_new`` / ``json_keep`` (whole answer) and ``ttfb_new`` /
    ``ttfb_keep`` (first stream event); a "new" figure starts before connect()."""
    samples: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # the gateway's CPU seconds per request
    sent: int = 0
    completed: int = 0
    errors: list[str] = field(default_factory=list)


async def connection_cost(host: str, port: int, path: str, json_body: bytes, stream_body: bytes,
                          duration: float, min_pairs: int = 20, extra: dict[str, str] | None = None,
                          cpu=None) -> ConnStats:
    """One request at a time, alternating: JSON on a new connection, JSON on a kept-alive one, a stream
    on a new connection, a stream on the kept-alive one. The difference new - kept-alive is what a
    client pays per connection (accept, the gateway's per-connection setup, its upstream connect).
    ``cpu()``, when given, reads the gateway's CPU seconds: each request is charged what it cost."""
    raws = {"json": request_bytes(host, port, path, json_body, extra),
            "ttfb": request_bytes(host, port, path, stream_body, extra)}
    stats = ConnStats()
    keep = Conn(host, port)
    deadline = time.perf_counter() + duration
    pairs = 0
    while pairs < min_pairs or time.perf_counter() < deadline:
        pairs += 1
        for kind, raw in raws.items():
            for how in ("new", "keep"):
                conn = Conn(host, port) if how == "new" else keep
                t0 = time.perf_counter()
                if how == "keep":
                    await conn.ensure()  # (re)connect outside the timing: a kept-alive request
                    t0 = time.perf_counter()
                stats.sent += 1
                cpu0 = cpu() if cpu is not None else None
                res = await conn.exchange(raw)
                if how == "new":
                    conn.close()
                    await asyncio.sleep(0)  # let the close reach the gateway before charging CPU
                if cpu0 is not None and res.error is None:
                    stats.cpu.setdefault(f"{kind}_{how}", []).append(cpu() - cpu0)
                if res.error is not None:
                    stats.errors.append(res.error)
                    continue
                stats.completed += 1
                end = res.total if kind == "json" else res.ttfb
                if end is not None:
                    # exchange() times from its own write; add the connect a "new" request paid first
                    stats.samples.setdefault(f"{kind}_{how}", []).append(end + (res.started - t0))
        if pairs > 2000:
            break
    keep.close()
    return stats
