"""The request path as a hostile client tries it: no relay through the Host header, no loop through the
gateway itself, bounded request heads, no decoy credentials, no dot segments. Raw bytes on a socket,
so no client library tidies the request up first."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest

from addon.credentials import fingerprint
from addon.request_guard import HOP_HEADER, gateway_id
from tests.support.gateway import Gateway
from tests.support.mock_upstream import Reply
from tests.support.reliability import reliability

OK = Reply(status=200, headers={"content-type": "application/json"}, body=b'{"ok": true}')
CHAT_BODY = b'{"model": "m", "messages": []}'


def raw(gateway: Gateway, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` on a new connection and read until the gateway closes it."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def first_head(gateway: Gateway, data: bytes) -> bytes:
    """Send ``data`` and read only the answer's head (a refused CONNECT may leave the connection open)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while b"\r\n\r\n" not in out and (chunk := s.recv(65536)):
            out += chunk
        return out


def request(target: bytes, host: bytes, extra: bytes = b"", body: bytes = b"", method: bytes = b"POST") -> bytes:
    return (method + b" " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Traceback" not in answer
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.strip() else {}


@reliability("isolation", "origin-form request with a foreign Host header (relay / SSRF attempt)",
             "JSON 404 (unknown prefix) or the prefix's provider; the Host never picks a destination",
             "row: provider NULL, status 404")
def test_origin_form_with_a_foreign_host_is_never_forwarded_there(gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.default = OK
    foreign = b"127.0.0.1:%d" % fresh_mock.port  # a server the gateway can reach: the mock itself
    answer = raw(gateway, request(b"/x", foreign, b"x-test-id: %s\r\n" % tag.encode(), method=b"GET"))
    status, body = status_and_json(answer)
    assert status == 404 and "unknown route" in json.dumps(body)
    assert fresh_mock.request_count == 0
    # A known prefix goes to its provider, whatever the Host header says.
    answer = raw(gateway, request(b"/openai/v1/chat/completions", b"10.255.255.1:9999", body=CHAT_BODY))
    assert status_and_json(answer) == (200, {"ok": True})
    assert fresh_mock.requests[-1].path == "/v1/chat/completions"
    assert gateway.row_for(tag)["status"] == 404


def test_a_foreign_host_later_on_a_kept_alive_connection_is_not_forwarded_either(gateway: Gateway, fresh_mock) -> None:
    fresh_mock.default = OK
    foreign = b"127.0.0.1:%d" % fresh_mock.port
    first = b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        len(CHAT_BODY), CHAT_BODY)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(first)
        answer = b""
        while b'{"ok": true}' not in answer:
            answer += s.recv(65536)
        s.sendall(request(b"/y", foreign, method=b"GET"))
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    assert status_and_json(out)[0] == 404
    assert [r.path for r in fresh_mock.requests] == ["/v1/chat/completions"]


SELF_SPELLINGS = ["127.1", "0x7f000001", "2130706433", "[::ffff:127.0.0.1]", "0.0.0.0", "localhost.", "LOCALHOST",
                  "foo.localhost"]


@reliability("isolation", "request addressed to the gateway itself under another spelling (127.1, 0x7f000001, "
             "[::ffff:127.0.0.1], 0.0.0.0, localhost.), origin- or absolute-form",
             "handled as a reverse-mode request (404 for an unknown prefix), never proxied back in",
             "row: status 404")
@pytest.mark.parametrize("spelling", SELF_SPELLINGS)
def test_the_gateway_never_proxies_to_itself(gateway: Gateway, fresh_mock, spelling: str) -> None:
    hostport = b"%s:%d" % (spelling.encode(), gateway.port)
    for target in (b"/x", b"http://" + hostport + b"/x"):
        answer = raw(gateway, request(target, hostport, method=b"GET"))
        status, body = status_and_json(answer)
        assert status == 404 and "unknown route" in json.dumps(body), answer[:300]
    # Absolute-form naming the gateway with a provider prefix is a reverse-mode request.
    fresh_mock.enqueue(OK)
    answer = raw(gateway, request(b"http://" + hostport + b"/openai/v1/chat/completions", hostport, body=CHAT_BODY))
    assert status_and_json(answer) == (200, {"ok": True})
    assert fresh_mock.request_count == 1


@reliability("isolation", "CONNECT to the gateway's own address", "508 Loop Detected", "nothing")
def test_connect_to_the_gateway_itself_is_refused(gateway: Gateway) -> None:
    answer = first_head(gateway, b"CONNECT 127.1:%d HTTP/1.1\r\nHost: 127.1:%d\r\n\r\n" % (gateway.port, gateway.port))
    assert answer.startswith(b"HTTP/1.1 508"), answer[:200]


@reliability("isolation", "proxy request (absolute-form or CONNECT) to the viewer's port on this machine",
             "403 / no tunnel: the token-less loopback viewer is not reachable through the proxy", "nothing")
def test_the_viewer_is_not_reachable_through_the_proxy(gateway: Gateway) -> None:
    viewer = gateway.viewer_url.removeprefix("http://").rstrip("/").encode()
    port = viewer.rpartition(b":")[2]
    assert httpx.get(gateway.viewer_url + "api/flows?limit=1", timeout=10).status_code == 200  # directly: yes
    for host in (b"127.0.0.1", b"127.1", b"localhost"):
        target = b"http://" + host + b":" + port + b"/api/flows?limit=1"
        answer = raw(gateway, b"GET " + target + b" HTTP/1.1\r\nHost: " + viewer + b"\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
        answer = first_head(gateway, b"CONNECT " + host + b":" + port + b" HTTP/1.1\r\nHost: " + viewer + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 403"), answer[:200]


@reliability("isolation", "request that already went through this gateway (corral-hop marker: a forwarding loop)",
             "508 Loop Detected in the provider's error shape; another gateway's marker passes",
             "row: status 508")
def test_a_request_carrying_this_gateways_hop_marker_is_refused(gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.default = OK
    url = gateway.base("anthropic") + "/v1/messages"
    mine = gateway_id("127.0.0.1", gateway.port)
    resp = httpx.post(url, content=CHAT_BODY, headers={HOP_HEADER: f"0123456789ab, {mine}", "x-test-id": tag})
    assert resp.status_code == 508 and resp.json()["type"] == "error"  # Anthropic's error shape
    assert fresh_mock.request_count == 0
    assert gateway.row_for(tag)["status"] == 508
    # What Corral sends on carries its marker after the ones already there; it never comes back.
    resp = httpx.post(url, content=CHAT_BODY, headers={HOP_HEADER: "0123456789ab"})
    assert resp.status_code == 200 and HOP_HEADER not in resp.headers
    assert fresh_mock.requests[-1].headers[HOP_HEADER] == f"0123456789ab, {mine}"


class Forwarder:
    """A TCP port forward to ``port``, in threads: an upstream that leads back into the gateway."""

    def __init__(self, port: int) -> None:
        self.target, self.connections = port, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@reliability("isolation", "an upstream that leads back into the gateway (a port forward to it)",
             "508 Loop Detected after one trip", "row: status 508")
def test_a_loop_through_a_port_forward_stops_after_one_trip(mock, tmp_path) -> None:
    gw = Gateway(mock.url, workdir=tmp_path)
    fwd = Forwarder(gw.port)
    gw.config_path.write_text(gw.config_path.read_text() + f'\n[providers.loopy]\ncustom = true\nupstream = '
                              f'"http://127.0.0.1:{fwd.port}/loopy"\n')
    with gw:
        resp = httpx.post(gw.base("loopy") + "/v1/chat/completions", content=CHAT_BODY, timeout=30)
    fwd.sock.close()
    assert resp.status_code == 508 and "came back" in resp.json()["error"]["message"]
    assert HOP_HEADER not in resp.headers
    assert fwd.connections == 1  # one trip round, then refused (508 is not retried)


def test_an_upstream_at_the_gateways_own_address_fails_at_start(mock, tmp_path) -> None:
    gw = Gateway(mock.url, workdir=tmp_path)
    gw.config_path.write_text(gw.config_path.read_text()
                              + f'\n[providers.loopy]\ncustom = true\nupstream = "http://localhost.:{gw.port}"\n')
    with pytest.raises(RuntimeError, match=r"\[providers.loopy\] upstream .* own listen address"):
        gw.start()


@reliability("bad client input", "10,000 request headers / more than 32 KiB of headers",
             "431 in the provider's error shape at once; other clients unaffected", "row: status 431")
def test_too_many_or_too_large_headers_get_431(gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.default = OK
    many = b"".join(b"x-h%d: v\r\n" % i for i in range(10_000))
    answers: list[bytes] = []
    flood = threading.Thread(target=lambda: answers.append(raw(gateway, request(
        b"/openai/v1/chat/completions", b"127.0.0.1:%d" % gateway.port, many + b"x-test-id: %s\r\n" % tag.encode(),
        CHAT_BODY))))
    flood.start()
    # Another client meanwhile gets its answer.
    other = httpx.post(gateway.base("openai") + "/v1/chat/completions", content=CHAT_BODY, timeout=10)
    flood.join()
    assert other.status_code == 200
    status, body = status_and_json(answers[0])
    assert status == 431 and "header fields" in body["error"]["message"]  # OpenAI's error shape
    big = b"x-big: " + b"a" * 40_000 + b"\r\n"
    status, body = status_and_json(raw(gateway, request(b"/openai/v1/chat/completions", b"x", big, CHAT_BODY)))
    assert status == 431 and "bytes" in body["error"]["message"]
    assert fresh_mock.request_count == 1  # only the other client's request
    assert gateway.row_for(tag)["status"] == 431


@reliability("bad client input", "CR, LF (obs-fold) or NUL inside a header value", "400", "row: status 400")
@pytest.mark.parametrize("header", [b"x-a: a\rInjected: b\r\n", b"x-a: a\x00b\r\n", b"x-a: a\r\n folded\r\n"])
def test_control_bytes_in_header_values_get_400(gateway: Gateway, fresh_mock, header: bytes) -> None:
    fresh_mock.default = OK
    status, body = status_and_json(raw(gateway, request(b"/openai/v1/chat/completions", b"x", header, CHAT_BODY)))
    assert status == 400 and "CR, LF or NUL" in body["error"]["message"]
    assert fresh_mock.request_count == 0


@reliability("bad client input", "bare LF line endings in the request head",
             "accepted as line ends (RFC 9112 2.2, as nginx does), parsed exactly as CRLF: nothing hides in them",
             "row")
def test_bare_lf_line_endings_are_plain_line_ends(gateway: Gateway, fresh_mock) -> None:
    fresh_mock.default = OK
    head = (b"POST /openai/v1/chat/completions HTTP/1.1\nHost: x\nx-a: 1\nConnection: close\n"
            b"Content-Length: %d\n\n" % len(CHAT_BODY))
    assert status_and_json(raw(gateway, head + CHAT_BODY)) == (200, {"ok": True})
    sent = fresh_mock.requests[-1]
    assert sent.headers["x-a"] == "1" and sent.body == CHAT_BODY


@reliability("isolation", "decoy credential beside the real one (x-api-key next to Gemini's ?key=), "
             "two Authorization headers", "decoys ignored; duplicates: 400",
             "credential = the one the provider authenticates with")
def test_the_credential_is_what_the_provider_authenticates_with(gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.default = OK
    for decoy in ("junk1", "junk2"):
        httpx.post(gateway.base("gemini") + "/v1beta/models/m:generateContent?key=REALKEY", content=b"{}",
                   headers={"x-api-key": decoy, "authorization": f"Bearer {decoy}", "x-test-id": tag})
    rows = gateway.wait_rows(lambda r: tag in (r["request_headers"] or ""), 2)
    assert {r["credential"] for r in rows} == {fingerprint("REALKEY")}
    before = fresh_mock.request_count
    for extra in (b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n", b"x-api-key: a\r\nX-Api-Key: b\r\n"):
        status, body = status_and_json(raw(gateway, request(b"/anthropic/v1/messages", b"x", extra, CHAT_BODY)))
        assert status == 400 and "more than once" in body["error"]["message"]
    status, _ = status_and_json(raw(gateway, request(b"/gemini/v1beta/models/m:generateContent?key=a&key=b", b"x")))
    assert status == 400
    assert fresh_mock.request_count == before


@reliability("bad client input", "dot segments in the path (/groq/../v1/x, %2e%2e)", "400, never forwarded",
             "row: status 400")
@pytest.mark.parametrize("target", [b"/groq/../openai/v1/chat/completions", b"/openai/v1/%2e%2e/x",
                                    b"/openai/./v1/chat/completions", b"/openai/v1/%2E./x"])
def test_dot_segments_are_refused(gateway: Gateway, fresh_mock, target: bytes) -> None:
    fresh_mock.default = OK
    status, body = status_and_json(raw(gateway, request(target, b"x", body=CHAT_BODY)))
    assert status == 400 and "segments" in json.dumps(body)
    assert fresh_mock.request_count == 0
