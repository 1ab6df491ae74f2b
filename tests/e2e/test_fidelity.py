"""Every endpoint passes through exactly, every body streams, and the record tells the truth.

Each request is sent twice with the same client: direct to an echoing upstream, and through Corral
(reverse mode: ``/<prefix>/...``; explicit mode: ``https://api.openai.com/...`` through the proxy,
TLS intercepted). What the upstream received and what the client received must be byte-identical,
apart from the one documented change: ``"stream_options":{"include_usage":true},`` inserted after
the opening brace of a streaming chat/legacy completion that did not ask for usage (and the usage
chunk it brings hidden again). The walk covers every operation of the OpenAI and Anthropic API
descriptions (tests/data/openapi); the kinds cover every way a body travels.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.echo_upstream import DONE, SSE_EVENTS, USAGE_CHUNK, EchoUpstream, binary
from tests.support.gateway import Gateway, new_tag
from tests.support.reliability import reliability

OPENAPI = Path(__file__).resolve().parents[1] / "data" / "openapi"
INJECTION = b'"stream_options":{"include_usage":true},'
HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}
# Framing and routing fields, which a proxy must set for its own connection.
HOP = {"host", "connection", "keep-alive", "proxy-connection", "content-length", "transfer-encoding", "te",
       "trailer", "upgrade"}
# Awkward bytes a re-serialising proxy would change: a number beyond float range, duplicate keys,
# escapes, odd whitespace, key order.
ODD_JSON = (b'{ "model" : "m",\n\t"n": 1e400, "n": 1.50, "s": "\\u00e9\\/\\"}", "messages": [], '
            b'"stream": true }')
MODES = ["reverse", "explicit"]


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoUpstream]:
    with EchoUpstream() as e:
        yield e


@pytest.fixture(scope="module")
def gw(echo: EchoUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with Gateway(echo.url, workdir=tmp_path_factory.mktemp("fidelity")) as g:
        yield g


class Sides:
    """One httpx client per route: direct to the echo, and through the gateway in each mode."""

    def __init__(self, echo: EchoUpstream, gw: Gateway) -> None:
        timeout = httpx.Timeout(10)
        self.direct = httpx.Client(base_url=echo.url, trust_env=False, timeout=timeout)
        self.reverse = httpx.Client(trust_env=False, timeout=timeout)
        ca = ssl.create_default_context(cafile=str(gw.workdir / "certs" / "mitmproxy-ca-cert.pem"))
        self.explicit = httpx.Client(proxy=gw.url, verify=ca, trust_env=False, timeout=timeout)
        self.gw = gw

    def url(self, mode: str, provider: str, path: str) -> str:
        if mode == "reverse":
            return self.gw.base(provider) + path
        return f"https://{HOSTS[provider]}{path}"

    def client(self, mode: str) -> httpx.Client:
        return self.reverse if mode == "reverse" else self.explicit

    def close(self) -> None:
        for c in (self.direct, self.reverse, self.explicit):
            c.close()


@pytest.fixture(scope="module")
def sides(echo: EchoUpstream, gw: Gateway) -> Iterator[Sides]:
    s = Sides(echo, gw)
    yield s
    s.close()


def upstream_view(echo: EchoUpstream, tag: str) -> tuple[str, str, list[tuple[str, str]], bytes]:
    r = echo.received[tag]
    # The one documented header Corral adds upstream: its loop marker (README, "What Corral changes").
    hops = [v for k, v in r.headers if k.lower() == "corral-hop"]
    assert len(hops) <= 1 and all(len(v) == 12 and int(v, 16) >= 0 for v in hops), hops
    headers = [(k.lower(), v) for k, v in r.headers
               if k.lower() not in HOP and k.lower() not in ("x-test-id", "corral-hop")]
    return r.method, r.target, headers, r.body


def client_view(resp: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [(k, v) for k, v in resp.headers.multi_items()
               if k not in HOP and k not in ("date", "server") and not k.startswith("x-corral-")]
    return resp.status_code, headers, resp.content


# The direct side of a request, made once for both modes: (method, path, body, headers) -> (view, tag).
_DIRECT: dict[tuple, tuple[Any, str]] = {}


def exchange(sides: Sides, mode: str, provider: str, method: str, path: str, *, content: bytes | None = None,
             headers: dict[str, str] | None = None, reply: str = "json") -> dict[str, Any]:
    """The same request direct and through Corral: both views of both, and the tag of the proxied one."""
    headers = {"x-fid-reply": reply, **(headers or {})}
    key = (method, path, content, tuple(sorted(headers.items())))
    if key not in _DIRECT:
        direct_tag = new_tag()
        d = sides.direct.request(method, path, content=content, headers={**headers, "x-test-id": direct_tag})
        _DIRECT[key] = client_view(d), direct_tag
    direct, direct_tag = _DIRECT[key]
    tag = new_tag()
    c = sides.client(mode).request(method, sides.url(mode, provider, path), content=content,
                                   headers={**headers, "x-test-id": tag})
    return {"direct": direct, "proxied": client_view(c), "tag": tag, "direct_tag": direct_tag}


def assert_same(echo: EchoUpstream, ex: dict[str, Any], injected: bool = False) -> None:
    direct_up, proxied_up = upstream_view(echo, ex["direct_tag"]), upstream_view(echo, ex["tag"])
    expected_body = direct_up[3].replace(b"{", b"{" + INJECTION, 1) if injected else direct_up[3]
    assert proxied_up[:3] == direct_up[:3]
    assert proxied_up[3] == expected_body
    assert ex["proxied"] == ex["direct"]


# --- every endpoint of the published API descriptions -------------------------------------------

def endpoints(provider: str) -> list[dict[str, Any]]:
    return json.loads((OPENAPI / f"{provider}.endpoints.json").read_text())


def request_for(endpoint: dict[str, Any]) -> tuple[bytes | None, dict[str, str]]:
    """A streaming request in the endpoint's own body type (none for GET/HEAD)."""
    types = endpoint["content_types"]
    if endpoint["method"] in ("GET", "HEAD") or not types:
        return None, {}
    if "application/json" in types:
        return ODD_JSON, {"content-type": "application/json"}
    if "multipart/form-data" in types:
        return MULTIPART, {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    return b"v=0\r\n", {"content-type": types[0]}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_every_published_endpoint_passes_through_exactly(echo, gw, sides, mode: str, provider: str) -> None:
    """include_usage lands on exactly the endpoints whose schema has it; everything else is untouched."""
    wrong, expected = [], {}
    for e in endpoints(provider):
        path = re.sub(r"\{[^}]+\}", "x1", e["path"])
        path += ("&" if "?" in path else "?") + "limit=2&after=a%20b" if e["method"] == "GET" else ""
        content, headers = request_for(e)
        ex = exchange(sides, mode, provider, e["method"], path, content=content, headers=headers)
        injected = e["include_usage"] and content == ODD_JSON
        try:
            assert_same(echo, ex, injected=injected)
        except AssertionError as err:
            wrong.append((e["method"], e["path"], str(err)[:300]))
        expected[ex["tag"]] = (e, content)
    assert wrong == []
    rows = {r["tag"]: r for r in rows_for(gw, expected)}
    bad = []
    for tag, (e, content) in expected.items():
        r = rows[tag]
        model = "m" if content == ODD_JSON else ("gpt-4o-transcribe" if content == MULTIPART else None)
        changes = json.loads(r["corral_changes"] or "[]")
        facts = (r["complete"], r["error"], r["parse_error"], r["model"], bool(changes))
        if facts != (1, None, None, model, bool(e["include_usage"] and content == ODD_JSON)):
            bad.append((e["method"], e["path"], facts))
        if content is not None and stored(r["request_body"]) != content:
            bad.append((e["method"], e["path"], "request_body is not what the client sent"))
    assert bad == []


def rows_for(gw: Gateway, expected: dict[str, Any]) -> list[dict[str, Any]]:
    tags = set(expected)
    rows = gw.wait_rows(lambda r: tag_of(r) in tags, len(tags), timeout=30)
    return [{**r, "tag": tag_of(r)} for r in rows]


def tag_of(row: dict[str, Any]) -> str | None:
    for name, value in json.loads(row.get("request_headers") or "[]"):
        if name.lower() == "x-test-id":
            return value
    return None


def row(gw: Gateway, tag: str) -> dict[str, Any]:
    return gw.row_for(tag)


def stored(text: str) -> bytes:
    """A recorded body back as bytes (binary bodies are stored as "base64:...")."""
    return base64.b64decode(text[7:]) if text.startswith("base64:") else text.encode()


# --- every kind of request and answer -----------------------------------------------------------

BOUNDARY = "corralFormBoundary7MA4YWxk"
AUDIO = binary(2000, b"wav") + b"\r\n--" + BOUNDARY.encode()[:-1] + b"\r\n\x00"  # near-miss delimiter inside
MULTIPART = (
    f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o-transcribe\r\n"
    f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
    f"Content-Type: audio/wav\r\n\r\n"
).encode() + AUDIO + f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize("mode", MODES)
def test_streamed_chat_gets_exactly_the_injection_and_its_usage(echo, gw, sides, mode: str) -> None:
    ex = exchange(sides, mode, "openai", "POST", "/v1/chat/completions", content=ODD_JSON,
                  headers={"content-type": "application/json"}, reply="sse")
    assert_same(echo, ex, injected=True)
    assert USAGE_CHUNK not in ex["proxied"][2] and ex["proxied"][2] == b"".join([*SSE_EVENTS, DONE])
    r = row(gw, ex["tag"])
    assert (r["complete"], r["error"], r["parse_error"], r["model"]) == (1, None, None, "gpt-4o-mini")
    assert (r["input_tokens"], r["output_tokens"]) == (3, 2)
    assert r["request_body"] == ODD_JSON.decode()  # what the client sent, not what Corral forwarded
    changes = json.loads(r["corral_changes"])
    assert changes[0] == 'request body: added "stream_options":{"include_usage":true} at byte 1'
    assert any("removed 1 usage-only SSE event" in c for c in changes)


@reliability("upstream faults", "SSE answer with Content-Length whose usage chunk Corral hides",
             "the whole stream, chunked (no Content-Length promising bytes that never come)",
             "complete, usage; corral_changes names the dropped Content-Length")
@pytest.mark.parametrize("mode", MODES)
def test_shortened_stream_does_not_keep_the_upstream_content_length(echo, gw, sides, mode: str) -> None:
    ex = exchange(sides, mode, "openai", "POST", "/v1/chat/completions", content=ODD_JSON,
                  headers={"content-type": "application/json"}, reply="sse-content-length")
    assert_same(echo, ex, injected=True)
    r = row(gw, ex["tag"])
    assert (r["complete"], r["error"], r["input_tokens"]) == (1, None, 3)
    assert any("Content-Length dropped" in c for c in json.loads(r["corral_changes"]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", [
    # (name, method, path, body, headers, reply, expected record: complete, error?, model, type)
    ("multipart", "POST", "/v1/audio/transcriptions", MULTIPART,
     {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}, "json", "gpt-4o-transcribe"),
    ("gzip body", "POST", "/v1/embeddings", gzip.compress(b'{"model": "text-embedding-3-small", "input": "x"}'),
     {"content-type": "application/json", "content-encoding": "gzip"}, "json", "text-embedding-3-small"),
    ("query string", "GET", "/v1/files?limit=2&purpose=a%20b&x=%2F&x=2", None, {}, "json", None),
    ("DELETE with body", "DELETE", "/v1/vector_stores/vs_1/files", b'{"model":"m","ids":["a"]}',
     {"content-type": "application/json"}, "json", "m"),
    ("DELETE, 204", "DELETE", "/v1/files/f1", None, {}, "empty", None),
    ("HEAD", "HEAD", "/v1/files/f1/content", None, {}, "download", None),
    ("audio answer", "POST", "/v1/audio/speech", b'{"model":"tts-1","input":"hi","voice":"alloy"}',
     {"content-type": "application/json"}, "audio", "tts-1"),
    ("chunked binary", "POST", "/v1/audio/speech", b'{"model":"tts-1","input":"hi","voice":"alloy"}',
     {"content-type": "application/json"}, "chunked-binary", "tts-1"),
    ("large download", "GET", "/v1/files/f1/content", None, {}, "download", None),
    ("chunked JSON", "GET", "/v1/models", None, {}, "chunked-json", None),
    ("Responses stream", "POST", "/v1/responses", ODD_JSON, {"content-type": "application/json"}, "json", "m"),
    ("Assistants run stream", "POST", "/v1/threads/t1/runs", ODD_JSON, {"content-type": "application/json"},
     "json", "m"),
    ("resource with an error field", "GET", "/v1/responses/resp_1", None, {}, "resource-error", None),
    ("resource with error null", "GET", "/v1/fine_tuning/jobs/ft1", None, {}, "resource-error-null", None),
], ids=lambda k: k[0] if isinstance(k, tuple) else k)
def test_every_request_kind_passes_through_and_is_recorded(echo, gw, sides, mode: str, kind: tuple) -> None:
    _name, method, path, body, headers, reply, model = kind
    ex = exchange(sides, mode, "openai", method, path, content=body, headers=headers, reply=reply)
    assert_same(echo, ex)
    r = row(gw, ex["tag"])
    assert (r["complete"], r["error"], r["parse_error"], r["model"]) == (1, None, None, model)
    assert r["corral_changes"] is None
    if body is not None:
        assert stored(r["request_body"]) == body  # what the client sent (the gzip bytes, not their content)
    if reply in ("download", "audio", "chunked-binary") and method != "HEAD":
        assert r["response_type"] in ("application/octet-stream", "audio/mpeg")
        assert r["response_bytes"] == len(ex["proxied"][2])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reply, error", [("envelope-error", "server_error: bad things"),
                                          ("http-error", "invalid_request_error: nope")])
def test_real_failures_are_recorded_as_failures(echo, gw, sides, mode: str, reply: str, error: str) -> None:
    ex = exchange(sides, mode, "openai", "GET", "/v1/models", reply=reply)
    assert_same(echo, ex)
    assert row(gw, ex["tag"])["error"] == error


@reliability("upstream faults", "chunked binary answer (streamed text-to-speech, a download)",
             "the first bytes at once, while the upstream still holds the rest", "complete, type and size")
@pytest.mark.parametrize("mode", MODES)
def test_chunked_binary_reaches_the_client_before_the_upstream_finishes(echo, gw, sides, mode: str) -> None:
    """The upstream holds everything after its first chunk until this client has that chunk in hand:
    a gateway that buffered the body would never deliver it (the read times out, the test fails)."""
    tag = new_tag()
    echo.hold = threading.Event()
    headers = {"x-fid-reply": "chunked-binary", "x-fid-hold": "1", "x-test-id": tag,
               "content-type": "application/json"}
    client = sides.client(mode)
    url = sides.url(mode, "openai", "/v1/audio/speech")
    body = b'{"model":"tts-1","input":"hi","voice":"alloy","stream_format":"audio"}'
    with client.stream("POST", url, content=body, headers=headers, timeout=httpx.Timeout(10, read=5)) as resp:
        chunks = resp.iter_raw()
        first = next(chunks)
        assert first and not echo.hold.is_set()  # the client has bytes; the upstream still holds the rest
        echo.hold.set()
        data = first + b"".join(chunks)
    assert data == binary(4096, b"first") + binary(60000, b"rest")
    r = row(gw, tag)
    assert (r["complete"], r["error"], r["parse_error"]) == (1, None, None)
    assert (r["response_type"], r["response_bytes"]) == ("audio/mpeg", len(data))
