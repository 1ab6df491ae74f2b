"""Bad input passes through unchanged and is recorded with a parse error; Corral never crashes and
never answers with a traceback. Unknown routes are refused, never forwarded."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.support.gateway import Gateway
from tests.support.mock_upstream import Reply
from tests.support.reliability import reliability

CHAT = "/openai/v1/chat/completions"


def post(gateway: Gateway, path: str, body: bytes, tag: str, content_type: str = "application/json") -> httpx.Response:
    with httpx.Client(timeout=60) as client:
        return client.post(
            gateway.url + path,
            content=body,
            headers={"content-type": content_type, "x-test-id": tag, "authorization": "Bearer sk-bad-input"},
        )


OK = Reply(status=200, headers={"content-type": "application/json"}, body=b'{"ok": true}')


BAD_BODIES = {
    "malformed (truncated) JSON": (b'{"model": "gpt-4o", "messages": [', "application/json"),
    "JSON that is not an object": (b"[1, 2, 3]", "application/json"),
    "JSON string literal": (b'"hello"', "application/json"),
    "JSON null": (b"null", "application/json"),
    "non-JSON content type (form)": (b"model=gpt-4o&prompt=hi", "application/x-www-form-urlencoded"),
    "empty body": (b"", "application/json"),
    "wrong types for model/stream/messages": (b'{"model": 42, "stream": "yes", "messages": {}}', "application/json"),
    "invalid UTF-8": (b"\xff\xfe\x00garbage\x80", "application/json"),
    "deeply nested JSON (200,000 levels)": (b"[" * 200_000 + b"]" * 200_000, "application/json"),
    "deeply nested object in a field": (
        b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "application/json",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_BODIES))
def test_bad_request_bodies_pass_through_unchanged(gateway: Gateway, fresh_mock, tag: str, kind: str) -> None:
    body, content_type = BAD_BODIES[kind]
    fresh_mock.enqueue(OK)
    resp = post(gateway, CHAT, body, tag, content_type)
    assert resp.status_code == 200 and resp.json() == {"ok": True}
    assert fresh_mock.requests[-1].body == body
    row = gateway.row_for(tag)
    assert row["status"] == 200
    if body:
        assert row["parse_error"], "a body Corral could not read is flagged"


for _kind in BAD_BODIES:
    test_bad_request_bodies_pass_through_unchanged = reliability(
        "bad client input", _kind, "forwarded unchanged; the provider's answer",
        "row with parse_error", )(test_bad_request_bodies_pass_through_unchanged)

# Bodies not meant to be JSON: nothing to parse is no parse error (a form's fields are read).
OTHER_BODIES = {
    "binary body (octet-stream)": (bytes(range(256)) * 4, "application/octet-stream", None),
    "multipart body": (
        b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
        b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc\r\n--b--\r\n",
        "multipart/form-data; boundary=b", "whisper-1",
    ),
}


@pytest.mark.parametrize("kind", list(OTHER_BODIES))
def test_other_request_bodies_pass_through_unchanged(gateway: Gateway, fresh_mock, tag: str, kind: str) -> None:
    body, content_type, model = OTHER_BODIES[kind]
    fresh_mock.enqueue(OK)
    resp = post(gateway, CHAT, body, tag, content_type)
    assert resp.status_code == 200 and resp.json() == {"ok": True}
    assert fresh_mock.requests[-1].body == body
    row = gateway.row_for(tag)
    assert (row["status"], row["parse_error"], row["model"]) == (200, None, model)


for _kind in OTHER_BODIES:
    test_other_request_bodies_pass_through_unchanged = reliability(
        "bad client input", _kind, "forwarded unchanged; the provider's answer",
        "row without parse_error (not meant to be JSON; a form's model is read)",
    )(test_other_request_bodies_pass_through_unchanged)


@reliability(
    "bad client input", "enormous body (20 MB)", "forwarded unchanged", "row; stored body clipped to body_limit"
)
def test_huge_body_passes_through_and_the_record_is_clipped(gateway: Gateway, fresh_mock, tag: str) -> None:
    big = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "' + b"x" * (20 * 1024 * 1024) + b'"}]}'
    fresh_mock.enqueue(OK)
    resp = post(gateway, CHAT, big, tag)
    assert resp.status_code == 200
    assert fresh_mock.requests[-1].body == big
    row = gateway.row_for(tag, timeout=30)
    assert row["model"] == "gpt-4o"
    assert len(row["request_body"]) <= 4 * 1024 * 1024


@reliability("upstream faults", "broken SSE from upstream", "bytes unchanged", "row with parse_error, usage NULL")
def test_broken_upstream_json_and_sse_pass_through_with_parse_error(gateway: Gateway, fresh_mock, tag: str) -> None:
    broken = [b"data: {\"id\": 1, \"choices\": [\n\n", b"data: not json at all\n\n", b"data: [DONE]\n\n"]
    fresh_mock.enqueue(Reply(status=200, headers={"content-type": "text/event-stream"}, chunks=broken))
    resp = post(gateway, CHAT, b'{"model": "gpt-4o", "stream": true, "messages": []}', tag)
    assert resp.content == b"".join(broken)
    row = gateway.row_for(tag)
    assert row["stream"] and row["parse_error"]
    assert row["input_tokens"] is None


@reliability("upstream faults", "non-JSON answer (HTML) with 200", "bytes unchanged", "row with parse_error")
def test_non_json_upstream_answer_passes_through(gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.enqueue(Reply(status=200, headers={"content-type": "text/html"}, body=b"<html>maintenance</html>"))
    resp = post(gateway, CHAT, b'{"model": "gpt-4o", "messages": []}', tag)
    assert resp.text == "<html>maintenance</html>"
    assert gateway.row_for(tag)["parse_error"]


@reliability(
    "bad client input",
    "unknown reverse prefix, '/'",
    "JSON 404, never forwarded",
    "row: provider NULL, status 404, 'unknown route'",
)
@pytest.mark.parametrize("path", ["/nope/v1/chat/completions", "/", "/favicon.ico"])
def test_unknown_prefix_gets_json_404_and_is_never_forwarded(gateway: Gateway, fresh_mock, tag: str, path: str) -> None:
    resp = post(gateway, path, b"{}", tag)
    assert resp.status_code == 404
    # A URL typo is a route problem: SDKs show the code, and "model_not_found" would send users hunting.
    assert resp.json()["error"]["code"] == "route_not_found"
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert "Traceback" not in resp.text
    assert fresh_mock.request_count == 0
    row = gateway.row_for(tag)
    assert row["provider"] is None and row["status"] == 404 and "unknown route" in row["error"]


@reliability(
    "bad client input",
    "SigV4 (Bedrock) request in reverse mode",
    "400 explaining to use the explicit proxy",
    "row with the error",
)
def test_bedrock_in_reverse_mode_explains_why_not(gateway: Gateway, fresh_mock, tag: str) -> None:
    resp = post(gateway, "/bedrock/model/x/converse", b"{}", tag)
    assert resp.status_code == 400
    assert "explicit proxy" in resp.json()["message"]
    assert fresh_mock.request_count == 0


@reliability(
    "isolation",
    "'//host' / query tricks in reverse mode",
    "request goes only to the provider's upstream",
    "row per request",
)
def test_path_tricks_stay_on_the_provider_upstream(gateway: Gateway, fresh_mock, tag: str) -> None:
    # Raw bytes on the socket: no client-side normalisation of the dot segments.
    fresh_mock.default = OK
    for target in (b"/openai//evil.example/v1/x", b"/openai/v1/x?host=evil.example", b"/openai/v1/x?p=/../../a"):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
            s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-test-id: %s\r\n"
                      b"Connection: close\r\n\r\n" % (gateway.port, tag.encode()))
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
    # Every one of them went to the configured upstream (the mock), nowhere else.
    assert fresh_mock.request_count == 3
    gateway.wait_rows(lambda r: tag in (r["request_headers"] or ""), 3)
