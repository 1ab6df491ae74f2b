"""A real HTTP/1.1 server that replays recorded provider exchanges (and scripted faults).

The gateway under test runs as a subprocess and talks to this mock over loopback sockets,
so everything here is real wire traffic: framing, keep-alive, resets and stalls included.
The server runs an asyncio loop in one background thread; the test thread only touches
state guarded by ``_lock``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.support import corpus

FAULTS = {
    "reset_before_headers", "reset_mid_stream", "stall_mid_stream",
    "invalid_chunked", "not_gzip", "close_before_headers",
}
# Framing is recomputed by the mock, so these recorded headers would lie about the replay.
_DROPPED = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
    "transfer-encoding", "content-length",
}
HeaderValue = str | list[str]


@dataclasses.dataclass
class Reply:
    """One scripted response. ``chunks`` set means a chunked stream, else Content-Length."""

    status: int = 200
    headers: dict[str, HeaderValue] = dataclasses.field(default_factory=dict)
    body: bytes = b""
    chunks: list[bytes] | None = None
    chunk_delay: float | None = None
    delay_before_headers: float = 0.0
    fault: str | None = None
    stall: float = 30.0  # how long "stall_mid_stream" holds the connection open
    # Set: everything after the first chunk waits until the test sets the event (say, once its client
    # holds the first chunk). A gateway that buffered the stream would then never deliver it.
    hold: threading.Event | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.fault == "refuse":
            raise ValueError("'refuse' is not per request: use MockUpstream.stop()/start()")
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {sorted(FAULTS)}")

    @classmethod
    def error(cls, status: int, **headers: str) -> Reply:
        """An OpenAI-shaped JSON error answer ("mock <status>"), with extra headers (e.g. retry-after)."""
        body = json.dumps({"error": {"message": f"mock {status}", "type": "server_error"}}).encode()
        return cls(status, {"content-type": "application/json", **headers}, body)

    @classmethod
    def from_exchange(cls, name: str, **overrides: Any) -> Reply:
        """The recorded response of corpus exchange ``name``, with fields overridden."""
        exchange = corpus.load(name)
        response = exchange["response"]
        headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        headers = {k: v for k, v in headers.items() if k not in _DROPPED}
        body = corpus.response_bytes(exchange)
        if headers.get("content-encoding") and not response.get("body_base64"):
            # Only the decoded text was stored, so the encoding header would be false.
            headers.pop("content-encoding")
        kind = corpus.stream_kind(exchange)
        chunks = None
        if kind is not None:
            compressed = bool(headers.get("content-encoding"))
            chunks = corpus.split_stream(body, "gzip" if compressed else kind)
        fields: dict[str, Any] = {"status": int(response["status"]), "headers": headers,
                                  "body": body, "chunks": chunks}
        fields.update(overrides)
        return cls(**fields)

    def wire_body(self) -> bytes:
        return b"".join(self.chunks) if self.chunks is not None else self.body


@dataclasses.dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lowercase names; repeated headers joined with ", "
    body: bytes
    time: float  # time.monotonic() when the request was fully read


class _BadRequest(Exception):
    pass


class MockUpstream:
    """Replaying upstream on 127.0.0.1. Use as a context manager or call start()/close()."""

    def __init__(self, tls: bool = False, chunk_delay: float = 0.005) -> None:
        self.chunk_delay = chunk_delay
        self.default: str | Reply | None = None
        self.requests: list[Received] = []
        self.sent_log: list[tuple[int, int, float]] = []
        self.errors: list[BaseException] = []  # unexpected server-side failures, for debugging
        self.port = 0
        self.ca_path: Path | None = None
        self._lock = threading.Lock()  # guards script and records; never held across loop calls
        self._life = threading.Lock()  # serialises start/stop/close
        self._script: collections.deque[str | Reply] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._ssl: ssl.SSLContext | None = None
        self._tmpdir: str | None = None
        if tls:
            self._setup_tls()

    # --- lifecycle -------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self) -> MockUpstream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Begin listening; after stop() this rebinds the same port."""
        with self._life:
            if self._loop is None:
                self._start_thread()
            if self._server is None:
                self._server = self._call(self._listen())

    def stop(self) -> None:
        """Stop listening and drop open connections, keeping the port for start()."""
        with self._life:
            if self._loop is not None and self._server is not None:
                self._call(self._shutdown())
                self._server = None

    def close(self) -> None:
        """Stop the server, the loop and the thread; safe to call twice."""
        self.stop()
        with self._life:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _start_thread(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="mock-upstream", daemon=True)
        self._thread.start()

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> asyncio.base_events.Server:
        server = await asyncio.start_server(
            self._on_connection, "127.0.0.1", self.port, ssl=self._ssl,
            reuse_address=True, limit=1 << 20,
        )
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        await self._server.wait_closed()

    def _setup_tls(self) -> None:
        self._tmpdir = tempfile.mkdtemp(prefix="mock-upstream-tls-")
        cert, key = _make_self_signed(Path(self._tmpdir))
        self.ca_path = cert
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        self._ssl = ctx

    # --- script and records ------------------------------------------------------------
    def enqueue(self, *items: str | Reply) -> None:
        """Append corpus names or Replies to the FIFO script."""
        with self._lock:
            self._script.extend(items)

    def reset(self) -> None:
        """Forget the script and everything recorded (``default`` is kept)."""
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.sent_log.clear()
            self.errors.clear()

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def _choose(self, received: Received) -> tuple[int, Reply]:
        with self._lock:
            self.requests.append(received)
            index = len(self.requests) - 1
            choice = received.headers.get("x-mock-exchange") or (
                self._script.popleft() if self._script else self.default)
        if choice is None:
            body = json.dumps({"error": "mock upstream: nothing scripted"}).encode()
            return index, Reply(404, {"content-type": "application/json"}, body)
        if isinstance(choice, Reply):
            return index, choice
        try:
            return index, Reply.from_exchange(choice)
        except KeyError as exc:
            body = json.dumps({"error": f"mock upstream: {exc}"}).encode()
            return index, Reply(404, {"content-type": "application/json"}, body)

    def _log_chunk(self, index: int, chunk: int) -> None:
        with self._lock:
            self.sent_log.append((index, chunk, time.monotonic()))

    # --- connection handling -------------------------------------------------------------
    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, _BadRequest, ssl.SSLError):
            pass  # the client went away or spoke garbage; nothing to report
        except Exception as exc:  # keep serving other connections, but leave a trace
            with self._lock:
                self.errors.append(exc)
        finally:
            self._conns.discard(task)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            received, wants_close = await _read_request(reader, writer)
            if received is None:
                return
            index, reply = self._choose(received)
            keep_open = await self._respond(writer, index, reply, wants_close)
            if not keep_open:
                return

    async def _respond(self, writer: asyncio.StreamWriter, index: int, reply: Reply,
                       wants_close: bool) -> bool:
        """Send ``reply``; True when the connection may serve another request."""
        if reply.delay_before_headers:
            await asyncio.sleep(reply.delay_before_headers)
        if reply.fault == "close_before_headers":
            writer.close()
            return False
        if reply.fault == "reset_before_headers":
            _reset(writer)
            return False
        chunked = reply.chunks is not None or reply.fault == "invalid_chunked"
        writer.write(_head(reply, chunked, wants_close))
        if reply.fault == "invalid_chunked":
            writer.write(b"zz-not-hex\r\ngarbage\r\n")
            await writer.drain()
            return False
        pieces = reply.chunks if reply.chunks is not None else [reply.body]
        if reply.fault in ("reset_mid_stream", "stall_mid_stream"):
            await self._send_first_then_fail(writer, index, reply, pieces, chunked)
            return False
        delay = self.chunk_delay if reply.chunk_delay is None else reply.chunk_delay
        for number, piece in enumerate(pieces):
            if number == 1 and reply.hold is not None:
                await _wait_for(reply.hold)
            if number and delay:
                await asyncio.sleep(delay)
            if not chunked:
                writer.write(piece)
            elif piece:  # an empty chunk would end the body early
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            self._log_chunk(index, number)
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        return not wants_close

    async def _send_first_then_fail(self, writer: asyncio.StreamWriter, index: int, reply: Reply,
                                    pieces: list[bytes], chunked: bool) -> None:
        # A plain body has no events, so half of it stands in for "the first chunk".
        first = pieces[0] if chunked else reply.body[: max(1, len(reply.body) // 2)]
        writer.write(b"%x\r\n%s\r\n" % (len(first), first) if chunked else first)
        await writer.drain()
        self._log_chunk(index, 0)
        if reply.fault == "stall_mid_stream":
            await asyncio.sleep(reply.stall)
            writer.close()
        else:
            await asyncio.sleep(0.05)  # let the first chunk reach the client before the RST
            _reset(writer)


async def _wait_for(event: threading.Event, give_up_after: float = 30.0) -> None:
    """Wait (on the mock's loop) until the test's thread sets ``event``; give up after ``give_up_after`` s."""
    deadline = time.monotonic() + give_up_after

    while not event.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.002)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN: SO_LINGER on with a zero timeout."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _head(reply: Reply, chunked: bool, closing: bool) -> bytes:
    reason = _REASONS.get(reply.status, "Mock")
    lines = [f"HTTP/1.1 {reply.status} {reason}"]
    for name, value in reply.headers.items():
        if name.lower() in _DROPPED:
            continue
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{name}: {item}")
    if reply.fault == "not_gzip":
        lines = [line for line in lines if not line.lower().startswith("content-encoding:")]
        lines.append("content-encoding: gzip")
    if chunked:
        lines.append("transfer-encoding: chunked")
    else:
        lines.append(f"content-length: {len(reply.body)}")
    if closing:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 529: "Overloaded"}


# --- request parsing ---------------------------------------------------------------------
async def _read_request(reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> tuple[Received | None, bool]:
    """Read one request; (None, True) on a clean end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest("truncated request head") from exc
        return None, True
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3:
        raise _BadRequest(request_line)
    method, path, version = parts
    headers: dict[str, str] = {}
    for line in filter(None, header_lines):
        name, _, value = line.partition(":")
        key, value = name.strip().lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    body = await _read_body(reader, headers)
    connection = headers.get("connection", "").lower()
    wants_close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
    return Received(method, path, headers, body, time.monotonic()), wants_close


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader)
    length = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(length) if length else b""


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError as exc:
            raise _BadRequest("bad chunk size") from exc
        if size == 0:
            break
        body += await reader.readexactly(size)
        await reader.readexactly(2)  # CRLF after each chunk
    while (await reader.readuntil(b"\r\n")) != b"\r\n":
        pass  # trailers are accepted and ignored
    return bytes(body)


# --- TLS ---------------------------------------------------------------------------------
def _make_self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed cert for localhost/127.0.0.1 that is its own CA.

    It is marked as a CA with the key identifiers present because Python 3.13 clients
    verify with VERIFY_X509_STRICT, which rejects trust anchors lacking them.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "mock-upstream.pem", folder / "mock-upstream.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
