"""Protocol-level abuse from clients, sent as raw bytes on a socket (no client library to tidy it up).

After every case the gateway must still answer a normal request: it stays up, and never answers with
a traceback.
"""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.support.gateway import Gateway
from tests.support.mock_upstream import Reply
from tests.support.reliability import reliability

OK = Reply(status=200, headers={"content-type": "application/json"}, body=b'{"ok": true}')


def raw(gateway: Gateway, data: bytes, read: bool = True, timeout: float = 10, leave: bool = False) -> bytes:
    """Send ``data`` and read the answer until the gateway closes; ``leave``: the client sends nothing
    more after it (half-close), as a client that gave up mid-request does."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=timeout) as s:
        s.sendall(data)
        if leave:
            s.shutdown(socket.SHUT_WR)
        if not read:
            return b""
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def still_up(gateway: Gateway, mock) -> None:
    mock.enqueue(OK)
    resp = httpx.post(gateway.base("openai") + "/v1/chat/completions", json={"model": "m", "messages": []}, timeout=10)
    assert resp.status_code == 200 and resp.json() == {"ok": True}


def head(gateway: Gateway, first_line: bytes, extra: bytes = b"", body: bytes = b"") -> bytes:
    return (first_line + b"\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n" % gateway.port + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


PROTOCOL_CASES = {
    "garbage request line": b"\x16\x03\x01 not http at all\r\n\r\n",  # a TLS record's start: never completed
    "HTTP/1.0 request without Host": b"GET /openai/v1/models HTTP/1.0\r\n\r\n",
    "both Content-Length and Transfer-Encoding (smuggling)": (
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n"),
    "invalid chunked request body": (
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"),
    "header line without colon": b"GET /openai/v1/models HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n",
    "CR/LF injection attempt in a header value": (
        b"GET /openai/v1/models HTTP/1.1\r\nHost: x\r\nX-A: a\rInjected: b\r\n\r\n"),
    "negative Content-Length": b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "headers cut off mid-way (client leaves)": b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: 127.",
    "body shorter than its Content-Length (client leaves)": (
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"model\""),
}


# Requests that stop half-way: the client sends nothing more (otherwise the gateway rightly waits for the rest).
UNFINISHED = {"garbage request line", "headers cut off mid-way (client leaves)",
              "body shorter than its Content-Length (client leaves)"}


@pytest.mark.parametrize("kind", list(PROTOCOL_CASES))
def test_protocol_abuse_gets_a_clean_answer_and_the_gateway_stays_up(gateway: Gateway, fresh_mock, kind: str) -> None:
    answer = raw(gateway, PROTOCOL_CASES[kind], timeout=10, leave=kind in UNFINISHED)
    assert b"Traceback" not in answer
    if answer:
        assert answer.startswith(b"HTTP/1.1 4") or answer.startswith(b"HTTP/1.1 5") or answer.startswith(b"HTTP/1.1 2")
    still_up(gateway, fresh_mock)


for _kind in PROTOCOL_CASES:
    test_protocol_abuse_gets_a_clean_answer_and_the_gateway_stays_up = reliability(
        "bad client input", _kind, "a 4xx from the HTTP layer, or the connection closed",
        "nothing (never reached a provider)")(test_protocol_abuse_gets_a_clean_answer_and_the_gateway_stays_up)


@reliability("bad client input", "HTTP methods the provider never uses (PUT, DELETE, PATCH, OPTIONS, HEAD)",
             "forwarded; the provider's answer", "row per request")
@pytest.mark.parametrize("method", [b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD"])
def test_unusual_methods_are_forwarded_and_recorded(gateway: Gateway, fresh_mock, tag: str, method: bytes) -> None:
    fresh_mock.enqueue(OK)
    answer = raw(
        gateway, head(gateway, method + b" /openai/v1/files/abc HTTP/1.1", b"x-test-id: %s\r\n" % tag.encode())
    )
    assert answer.startswith(b"HTTP/1.1 200")
    assert fresh_mock.requests[-1].method == method.decode()
    assert gateway.row_for(tag)["method"] == method.decode()


@reliability("bad client input", "very long header (60 KB) and many headers (300)", "forwarded", "row")
def test_oversized_headers(gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.default = OK
    many = b"".join(b"x-h%d: v\r\n" % i for i in range(300))
    for extra in (b"x-long: " + b"a" * 60_000 + b"\r\n", many):
        answer = raw(gateway, head(gateway, b"POST /openai/v1/chat/completions HTTP/1.1",
                                   extra + b"x-test-id: %s\r\n" % tag.encode(), b"{}"))
        assert answer.startswith(b"HTTP/1.1 "), answer[:100]
        assert b"Traceback" not in answer
    still_up(gateway, fresh_mock)


@reliability("bad client input", "non-ASCII bytes in a header value", "forwarded", "row")
def test_non_ascii_header(gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.enqueue(OK)
    answer = raw(gateway, head(gateway, b"POST /openai/v1/chat/completions HTTP/1.1",
                               b"x-name: caf\xe9 \xff\r\nx-test-id: %s\r\n" % tag.encode(), b"{}"))
    assert answer.startswith(b"HTTP/1.1 200")
    assert gateway.row_for(tag)["status"] == 200


@reliability("isolation", "absolute-form request to a non-provider host", "forwarded untouched (plain HTTP proxy)",
             "nothing: not an LLM flow")
def test_absolute_form_to_other_host_is_forwarded_untouched_and_not_recorded(
    gateway: Gateway, fresh_mock, tag: str
) -> None:
    fresh_mock.enqueue(OK)
    target = b"http://127.0.0.1:%d/some/path?q=1" % fresh_mock.port
    answer = raw(gateway, b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-test-id: %s\r\n"
                 b"Connection: close\r\n\r\n" % (fresh_mock.port, tag.encode()))
    assert answer.startswith(b"HTTP/1.1 200")
    assert fresh_mock.requests[-1].path == "/some/path?q=1"
    still_up(gateway, fresh_mock)  # and give the recorder time to (not) write it
    gateway.wait_rows(lambda r: True, 1)
    assert not [r for r in gateway.rows() if tag in (r["request_headers"] or "")]
