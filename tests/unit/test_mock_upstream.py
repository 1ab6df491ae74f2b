"""Tests of the replaying mock upstream itself, over real sockets with plain httpx."""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.support import corpus
from tests.support.mock_upstream import MockUpstream, Reply


@pytest.fixture
def mock() -> Iterator[MockUpstream]:
    with MockUpstream(chunk_delay=0.0) as upstream:
        yield upstream


def _raw(mock: MockUpstream, name: str) -> httpx.Response:
    """Fetch an exchange and keep the undecoded body bytes on ``response.raw``."""
    with httpx.Client() as client:
        with client.stream("POST", mock.url + "/v1/x", headers={"x-mock-exchange": name}) as response:
            response.raw = b"".join(response.iter_raw())  # type: ignore[attr-defined]
    return response


def _read_chunked_response(sock: socket.socket) -> tuple[bytes, list[bytes]]:
    """Minimal client-side parser: returns the head and the list of HTTP chunks."""
    stream = sock.makefile("rb")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += stream.readline()
    chunks = []
    while (size := int(stream.readline().strip(), 16)) > 0:
        chunks.append(stream.read(size))
        assert stream.read(2) == b"\r\n"
    assert stream.readline() == b"\r\n"
    return head, chunks


# --- corpus helpers ------------------------------------------------------------------------
def test_corpus_index() -> None:
    all_names = corpus.names()
    assert len(all_names) == 59 and all_names == sorted(all_names)
    assert sorted(corpus.success_names() + corpus.error_names()) == all_names
    assert "openai-chat-error-1" in corpus.error_names("openai")
    assert all(corpus.load(n)["provider"] == "anthropic" for n in corpus.success_names("anthropic"))
    assert corpus.load("openai-chat-json-1") is corpus.load("openai-chat-json-1")


def test_corpus_bytes_and_path() -> None:
    gz = corpus.load("openai-chat-json-1")
    assert gzip.decompress(corpus.response_bytes(gz)).decode() == gz["response"]["body_text"]
    assert corpus.request_path(corpus.load("anthropic-messages-error-1")) == "/v1/messages?beta=true"
    assert corpus.request_path(gz) == "/v1/chat/completions"


# --- replay --------------------------------------------------------------------------------
def test_every_exchange_replays_byte_exact(mock: MockUpstream) -> None:
    for name in corpus.names():
        exchange = corpus.load(name)
        response = _raw(mock, name)
        assert response.status_code == exchange["response"]["status"], name
        expected = Reply.from_exchange(name).wire_body()
        assert response.raw == expected, name  # type: ignore[attr-defined]
        if exchange["response"].get("body_base64") or "content-encoding" not in exchange["response"]["headers"]:
            assert expected == corpus.response_bytes(exchange), name


@pytest.mark.parametrize("name", ["anthropic-messages-json-1", "openai-chat-json-1"])
def test_json_replay_has_exact_content_length(mock: MockUpstream, name: str) -> None:
    response = _raw(mock, name)
    wire = corpus.response_bytes(corpus.load(name))
    assert response.headers["content-length"] == str(len(wire))
    assert "transfer-encoding" not in response.headers


def test_gzip_replay_keeps_encoding(mock: MockUpstream) -> None:
    exchange = corpus.load("anthropic-messages-stream-2")
    response = httpx.post(mock.url, headers={"x-mock-exchange": "anthropic-messages-stream-2"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.text == exchange["response"]["body_text"]


def test_decoded_only_recording_drops_content_encoding(mock: MockUpstream) -> None:
    # openai-embeddings-json-2 stored only the decoded text despite content-encoding: gzip.
    response = httpx.post(mock.url, headers={"x-mock-exchange": "openai-embeddings-json-2"})
    assert "content-encoding" not in response.headers
    assert response.json()["object"] == "list"


def test_repeated_headers_are_sent_separately(mock: MockUpstream) -> None:
    response = _raw(mock, "gemini-streamgeneratecontent-stream-2")
    assert response.headers.get_list("vary") == ["Origin", "X-Origin", "Referer"]


@pytest.mark.parametrize(
    "name, kind",
    [("openai-chat-stream-1", "sse"), ("gemini-streamgeneratecontent-stream-1", "sse"),
     ("bedrock-converse-stream-1", "aws-eventstream"), ("ollama-chat-stream-1", "ndjson")],
)
def test_stream_is_one_http_chunk_per_event(mock: MockUpstream, name: str, kind: str) -> None:
    exchange = corpus.load(name)
    with socket.create_connection(("127.0.0.1", mock.port)) as sock:
        sock.sendall(f"POST / HTTP/1.1\r\nHost: x\r\nx-mock-exchange: {name}\r\n"
                     "Content-Length: 0\r\n\r\n".encode())
        head, chunks = _read_chunked_response(sock)
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"".join(chunks) == corpus.response_bytes(exchange)
    assert len(chunks) == exchange["expect"]["event_count"]
    if kind == "sse":
        assert all(c.endswith((b"\n\n", b"\r\n\r\n")) for c in chunks)


def test_json_array_stream_splits_per_element() -> None:
    text = corpus.load("gemini-streamgeneratecontent-stream-2")["response"]["body_text"].encode()
    pieces = corpus.split_stream(text, "json-array")
    assert b"".join(pieces) == text
    assert sum(p.lstrip(b"[,\r\n").startswith(b"{") for p in pieces) == 3


def test_first_chunk_arrives_before_last_is_sent(mock: MockUpstream) -> None:
    hold = threading.Event()  # the rest waits until the client holds the first chunk
    mock.enqueue(Reply.from_exchange("openai-chat-stream-2", hold=hold))
    with httpx.stream("POST", mock.url, timeout=10) as r:
        chunks = r.iter_raw()
        next(chunks)
        assert len(mock.sent_log) <= 1  # nothing but the first chunk was sent yet
        hold.set()
        for _ in chunks:
            pass
    assert len(mock.sent_log) == 15


# --- script --------------------------------------------------------------------------------
def test_script_default_and_404(mock: MockUpstream) -> None:
    mock.enqueue("openai-chat-json-2", Reply(201, {"x-a": "1"}, b"scripted"))
    mock.default = "openai-chat-error-1"
    with httpx.Client() as client:
        header_pick = client.post(mock.url, headers={"x-mock-exchange": "together-chat-json-1"})
        first, second, third = (client.post(mock.url) for _ in range(3))
        mock.default = None
        fourth = client.post(mock.url)
    assert header_pick.json()["model"].startswith("mistralai/")  # did not consume the script
    assert first.json()["usage"]["completion_tokens"] == 3
    assert (second.status_code, second.headers["x-a"], second.content) == (201, "1", b"scripted")
    assert third.status_code == 404 and third.json()["error"]["code"] == "model_not_found"
    assert fourth.status_code == 404 and "nothing scripted" in fourth.text
    assert mock.request_count == 5


def test_reply_from_exchange_overrides() -> None:
    reply = Reply.from_exchange("openai-chat-stream-1", status=500, chunk_delay=0.1)
    assert (reply.status, reply.chunk_delay, len(reply.chunks or [])) == (500, 0.1, 6)
    assert "transfer-encoding" not in reply.headers and "connection" not in reply.headers
    with pytest.raises(ValueError):
        Reply(fault="refuse")


# --- faults --------------------------------------------------------------------------------
def _post(mock: MockUpstream, reply: Reply, timeout: float = 5.0) -> list[bytes]:
    """Stream a scripted reply; returns the chunks received before any error."""
    mock.enqueue(reply)
    received: list[bytes] = []
    with httpx.Client(timeout=timeout) as client:
        with client.stream("POST", mock.url) as response:
            for chunk in response.iter_bytes():
                received.append(chunk)
    return received


STREAM = [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]


@pytest.mark.parametrize(
    "fault, error",
    [("reset_before_headers", httpx.ReadError), ("close_before_headers", httpx.RemoteProtocolError),
     ("invalid_chunked", httpx.RemoteProtocolError), ("not_gzip", httpx.DecodingError)],
)
def test_fault_raises(mock: MockUpstream, fault: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        _post(mock, Reply(chunks=STREAM, fault=fault))
    assert mock.request_count == 1


def test_reset_mid_stream_after_first_chunk(mock: MockUpstream) -> None:
    mock.enqueue(Reply(chunks=STREAM, fault="reset_mid_stream"))
    got: list[bytes] = []
    with pytest.raises(httpx.ReadError):
        with httpx.stream("POST", mock.url) as response:
            got.extend(response.iter_raw())
    assert got == [STREAM[0]]


def test_stall_mid_stream_times_out_reader(mock: MockUpstream) -> None:
    mock.enqueue(Reply(chunks=STREAM, fault="stall_mid_stream", stall=3.0))
    got: list[bytes] = []
    with pytest.raises(httpx.ReadTimeout):  # the first chunk, then nothing: the reader gives up
        with httpx.stream("POST", mock.url, timeout=0.3) as response:
            got.extend(response.iter_raw())
    assert got == [STREAM[0]]


def test_delay_before_headers(mock: MockUpstream) -> None:
    mock.enqueue(Reply(body=b"late", delay_before_headers=1.0))
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(mock.url, timeout=0.2)


def test_stop_start_keeps_port_and_refuses_in_between(mock: MockUpstream) -> None:
    mock.default = "openai-chat-json-2"
    port = mock.port
    assert httpx.post(mock.url).status_code == 200
    mock.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.post(mock.url)
    mock.start()
    assert mock.port == port and httpx.post(mock.url).status_code == 200


# --- request recording -----------------------------------------------------------------------
def test_records_chunked_request_body(mock: MockUpstream) -> None:
    mock.default = "openai-chat-json-2"
    response = httpx.post(mock.url + "/v1/chat?x=1", content=iter([b'{"a":', b' 1}']),
                          headers={"X-Custom": "Yes"})
    assert response.status_code == 200
    (got,) = mock.requests
    assert (got.method, got.path, got.body) == ("POST", "/v1/chat?x=1", b'{"a": 1}')
    assert got.headers["transfer-encoding"] == "chunked" and got.headers["x-custom"] == "Yes"
    mock.reset()
    assert mock.requests == [] and mock.sent_log == [] and mock.default == "openai-chat-json-2"


def test_keep_alive_expect_continue_and_connection_close(mock: MockUpstream) -> None:
    mock.default = "openai-chat-json-2"
    size = len(corpus.response_bytes(corpus.load("openai-chat-json-2")))
    with socket.create_connection(("127.0.0.1", mock.port)) as sock:
        sock.sendall(b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hi" + b"POST /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):  # the server closes after the second response
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2 and b"connection: close" in data
    assert len(data) > 2 * size
    assert [(r.path, r.body) for r in mock.requests] == [("/a", b"hi"), ("/b", b"")]


# --- TLS and lifecycle -------------------------------------------------------------------------
def test_tls_with_generated_ca() -> None:
    with MockUpstream(tls=True) as mock:
        mock.default = "groq-chat-json-1"
        assert mock.url.startswith("https://127.0.0.1:") and mock.ca_path is not None
        ctx = ssl.create_default_context(cafile=str(mock.ca_path))
        for host in ("127.0.0.1", "localhost"):
            response = httpx.post(f"https://{host}:{mock.port}/", verify=ctx)
            assert response.json()["model"] == "llama3-8b-8192"
        ca_path = mock.ca_path
    assert not ca_path.exists()


def test_close_leaves_no_threads() -> None:
    before = threading.active_count()
    mock = MockUpstream()
    mock.start()
    mock.enqueue(Reply(chunks=STREAM, fault="stall_mid_stream", stall=30))
    with pytest.raises(httpx.ReadTimeout):
        with httpx.stream("GET", mock.url, timeout=0.2) as response:
            list(response.iter_raw())
    mock.close()  # does not wait for the stalled connection: its 30 s would hit the suite's timeout
    mock.close()
    assert threading.active_count() == before
