"""Upstream faults, each injected by the mock: what the client gets and what is recorded.

Never a hang, never a traceback: a transient failure before the first byte is retried into a success;
anything else reaches the client as a clean error in the provider's shape, or as the provider's own
bytes, and the row says what happened.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream, Reply
from tests.support.raw_server import RawServer
from tests.support.reliability import reliability

OK_NAME = "openai-chat-json-1"
STREAM = "openai-chat-stream-2"
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


err = Reply.error


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    """This module's own upstream: scripted replies must not be taken by a request that another
    module's gateway is still sending to the session-wide mock."""
    with MockUpstream() as m:
        yield m


@pytest.fixture(scope="module")
def plain() -> Iterator[RawServer]:
    """A plain-HTTP server that the TLS provider below is (wrongly) pointed at: the handshake fails."""
    with RawServer() as server:
        yield server


@pytest.fixture(scope="module")
def gw(mock: MockUpstream, plain: RawServer, tmp_path_factory) -> Iterator[Gateway]:
    config = {
        # Timeouts with room for a loaded machine, except on the two providers whose tests wait for
        # one on purpose (the slow and stalled mocks there wait far longer than these).
        "retries": {"attempts": 4, "backoff": 0.02, "backoff_max": 0.05, "connect_timeout": 10,
                    "ttfb_timeout": 20, "idle_timeout": 20},
        "retries.providers.xai": {"attempts": 2, "ttfb_timeout": 0.3},
        "retries.providers.fireworks": {"idle_timeout": 0.3},
        "providers.together": {"upstream": f"https://127.0.0.1:{plain.port}"},
    }
    with Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("faults")) as g:
        yield g


def call(gw: Gateway, tag: str, prefix: str = "openai", body: dict | None = None) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        return client.post(gw.base(prefix) + "/v1/chat/completions", json=body or BODY,
                           headers={"x-test-id": tag, "authorization": "Bearer sk-faults"})


@reliability(
    "upstream faults", "reset (RST) before the response headers", "retried: 200", "row: 200, retries=1, both attempts"
)
def test_reset_before_headers_is_retried(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    fresh_mock.enqueue(Reply(fault="reset_before_headers"), OK_NAME)
    resp = call(gw, tag)
    assert resp.status_code == 200
    row = gw.row_for(tag)
    assert row["status"] == 200 and row["retries"] == 1 and len(json.loads(row["attempts"])) == 2


@reliability("upstream faults", "connection closed before the headers", "retried: 200", "row: 200, retries=1")
def test_close_before_headers_is_retried(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    fresh_mock.enqueue(Reply(fault="close_before_headers"), OK_NAME)
    assert call(gw, tag).status_code == 200
    assert gw.row_for(tag)["retries"] == 1


@reliability(
    "upstream faults",
    "burst of 529, 503, 429 (and 500)",
    "retried: 200",
    "row: 200, retries=3, each status in attempts",
)
def test_error_status_burst_is_retried(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    fresh_mock.enqueue(err(529), err(503), err(429), OK_NAME)
    gw_resp = call(gw, tag)
    assert gw_resp.status_code == 200
    row = gw.row_for(tag)
    statuses = [a["status"] for a in json.loads(row["attempts"])]
    assert statuses == [529, 503, 429, 200]
    fresh_mock.enqueue(err(500), OK_NAME)
    assert call(gw, tag + "-500").status_code == 200


@reliability(
    "upstream faults",
    "5xx on every attempt",
    "the provider's last answer, unchanged",
    "row: 503 with the provider error, every attempt",
)
def test_persistent_5xx_reaches_the_client_unchanged(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    fresh_mock.enqueue(*[err(503)] * 5)
    resp = call(gw, tag)
    assert resp.status_code == 503 and resp.json()["error"]["message"] == "mock 503"
    row = gw.row_for(tag)
    assert row["status"] == 503 and "mock 503" in row["error"]


@reliability(
    "upstream faults",
    "TLS handshake failure (upstream speaks plain HTTP)",
    "a 502 in the provider's error shape, after every attempt",
    "row: 502 and the error",
)
def test_tls_handshake_failure_is_a_clean_502(gw: Gateway, plain: RawServer, tag: str) -> None:
    resp = call(gw, tag, prefix="together")
    assert resp.status_code == 502 and resp.headers["x-corral-error"] == "upstream_unavailable"
    assert "error" in resp.json() and "Traceback" not in resp.text
    row = gw.row_for(tag)
    assert row["status"] == 502 and row["error"]
    assert len(json.loads(row["attempts"])) == 4 and plain.connections >= 4


@reliability(
    "upstream faults",
    "slow headers beyond the TTFB timeout",
    "retried, then 504 in the provider's shape",
    "row: 504, timeout error",
)
def test_slow_headers_beyond_the_timeout(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    slow = Reply.from_exchange(OK_NAME, delay_before_headers=30)
    fresh_mock.enqueue(slow, slow)
    resp = call(gw, tag, prefix="xai")
    assert resp.status_code == 504 and resp.headers["x-corral-error"] == "upstream_timeout"
    assert "error" in resp.json()
    row = gw.row_for(tag)
    assert row["status"] == 504 and "ttfb_timeout" in row["error"]
    assert fresh_mock.request_count == 2  # both attempts of xai's policy


@reliability("upstream faults", "stall mid-stream beyond the idle timeout", "the chunks so far, then the stream ends",
             "row: complete=false, idle-timeout error")
def test_stall_mid_stream_is_cut(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    stalled = Reply.from_exchange(STREAM, fault="stall_mid_stream", stall=30)
    fresh_mock.enqueue(stalled)
    got = b""
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", gw.base("fireworks") + "/v1/chat/completions",
                           json={**BODY, "stream": True}, headers={"x-test-id": tag}) as resp:
            assert resp.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):  # the connection ends: no clean end of body
                for chunk in resp.iter_raw():
                    got += chunk
    assert got == stalled.chunks[0]  # the bytes so far
    row = gw.row_for(tag)
    assert not row["complete"] and "idle_timeout" in row["error"]
    assert fresh_mock.request_count == 1  # a stream that began is never retried


@reliability(
    "upstream faults", "invalid chunked encoding in the body", "the response breaks off (no hang)", "row with an error"
)
def test_invalid_chunked_encoding(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    fresh_mock.enqueue(Reply.from_exchange(STREAM, fault="invalid_chunked"))
    with httpx.Client(timeout=30) as client:
        try:
            client.post(gw.base("openai") + "/v1/chat/completions", json={**BODY, "stream": True},
                        headers={"x-test-id": tag}).read()
        except httpx.HTTPError:
            pass
    row = gw.row_for(tag)
    assert row["error"] and not row["complete"]


@reliability("upstream faults", "gzip content-encoding on a body that is not gzip", "the bytes unchanged",
             "row with parse_error")
def test_gzip_body_that_is_not_gzip(gw: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    plain_json = json.dumps(
        {"id": "x", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    ).encode()
    fresh_mock.enqueue(Reply(200, {"content-type": "application/json"}, plain_json, fault="not_gzip"))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as s:
        payload = json.dumps(BODY).encode()
        s.sendall(
            b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            b"x-test-id: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (gw.port, tag.encode(), len(payload), payload)
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"content-encoding: gzip" in data.lower()
    assert data.endswith(plain_json)  # passed on as it came
    row = gw.row_for(tag)
    assert row["parse_error"], {k: row[k] for k in ("status", "error", "parse_error", "response_headers", "stream")}
