"""Explicit proxy mode end to end: unmodified SDK scripts configured only by `corral env`.

The SDKs run in subprocesses whose environment is exactly what `corral env` printed (plus their
API key), calling the providers' default base URLs (https://api.openai.com ...). The gateway
intercepts those hosts with its own CA and sends them to the mock (the test config overrides every
corpus provider's upstream), so nothing leaves loopback.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shlex
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import corpus
from tests.support.gateway import CORRAL, REPO_ROOT, Gateway, new_tag
from tests.support.mock_upstream import MockUpstream
from tests.support.reliability import reliability

# Each script makes the calls listed in argv[1] (JSON: [{"body", "headers"}, ...]), one result line per
# call: an SDK takes seconds to import, so one process makes all of a test's (or a module's) calls.
OPENAI_SCRIPT = """
import json, sys
from openai import OpenAI
client = OpenAI()  # base URL, proxy and trust store all come from the environment
for call in json.loads(sys.argv[1]):
    body, headers = call["body"], call["headers"]
    if body.get("stream"):
        chunks = list(client.chat.completions.create(**body, extra_headers=headers))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        print(json.dumps({"chunks": len(chunks), "text": text}))
    else:
        r = client.chat.completions.create(**body, extra_headers=headers)
        print(json.dumps({"usage": r.usage.model_dump(), "text": r.choices[0].message.content}))
"""

ANTHROPIC_SCRIPT = """
import json, sys
from anthropic import Anthropic
client = Anthropic()
for call in json.loads(sys.argv[1]):
    body, headers = call["body"], call["headers"]
    if body.get("stream"):
        events = list(client.messages.create(**body, extra_headers=headers))
        deltas = [e for e in events if e.type == "message_delta"]
        print(json.dumps({"events": len(events), "usage": deltas[-1].usage.model_dump()}))
    else:
        r = client.messages.create(**body, extra_headers=headers)
        print(json.dumps({"usage": r.usage.model_dump()}))
"""
OPENAI_CASES = ["openai-chat-json-1", "openai-chat-stream-1"]
ANTHROPIC_CASES = ["anthropic-messages-json-1", "anthropic-messages-stream-1"]


PROXY_AUTH = "corral:s3cr@t"
AUTH_HEADER = {"proxy-authorization": "Basic " + base64.b64encode(PROXY_AUTH.encode()).decode()}
# A suffix look-alike (caught by the `:443$` end) and a prefix one (caught by the `^` start).
LOOK_ALIKES = ("api.openai.com.example.test", "evil-api.openai.com")


def assert_not_recorded(gateway: Gateway, tag: str, headers: dict[str, str] | None = None) -> None:
    """No row for ``tag``: checked after a later, recorded request's row is in (rows are written in order)."""
    import httpx

    marker = tag + "-marker"
    httpx.post(gateway.base("openai") + "/v1/chat/completions", json={}, trust_env=False, timeout=20,
               headers={"x-mock-exchange": "openai-chat-json-1", "x-test-id": marker, **(headers or {})})
    gateway.row_for(marker)
    assert not [
        r for r in gateway.rows() if tag in (r.get("request_headers") or "") and marker not in r["request_headers"]
    ]


def corral_env(gateway: Gateway) -> dict[str, str]:
    """Run `corral env` exactly as a user would and parse its `export NAME=value` lines."""
    return dict(_corral_env(gateway.port, str(gateway.config_path), str(gateway.workdir / "certs")))


@functools.cache  # once per gateway: its settings do not change
def _corral_env(port: int, config: str, certs: str) -> tuple[tuple[str, str], ...]:
    out = subprocess.run(
        [*CORRAL, "env", "--listen", f"127.0.0.1:{port}", "--config", config, "--certs", certs],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    env = {}
    for line in out.splitlines():
        assert line.startswith("export "), line
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    return tuple(env.items())


@pytest.fixture(scope="module")
def tls_site() -> Iterator[MockUpstream]:
    """A TLS server with its own self-signed certificate: a site that is not a provider."""
    with MockUpstream(tls=True) as m:
        m.default = "openai-chat-json-1"
        yield m


@pytest.fixture(scope="module")
def guarded(mock: MockUpstream, tls_site: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A second gateway: proxy authentication, one more intercepted host (localhost:443 as openai), and a
    test-only resolver (tests/support/fake_dns: no DNS query leaves the machine) that sends look-alike
    provider names to ``tls_site``."""
    config = {"gateway": {"proxyauth": PROXY_AUTH, "intercept_hosts": ["openai=^localhost:443$"]}}
    gw = Gateway(mock.url, workdir=tmp_path_factory.mktemp("guarded"), config=config)
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'tests' / 'support' / 'fake_dns'}{os.pathsep}{REPO_ROOT}",
           "CORRAL_TEST_HOSTS": ",".join(f"{name}:443=127.0.0.1:{tls_site.port}" for name in LOOK_ALIKES)}
    gw.start(env=env)
    try:
        yield gw
    finally:
        gw.stop()


def sdk_env(gateway: Gateway, **extra: str) -> dict[str, str]:
    # A clean environment: nothing but PATH, what `corral env` printed, and the API key.
    base = {k: os.environ[k] for k in ("PATH", "HOME", "SYSTEMROOT") if k in os.environ}
    return {**base, **corral_env(gateway), **extra}


def run_sdk(script: str, env: dict[str, str], calls: list[tuple[dict, dict[str, str]]]) -> list[dict]:
    """Run ``script`` with ``calls`` (request body, extra headers); the result of each call."""
    argument = json.dumps([{"body": body, "headers": headers} for body, headers in calls])
    proc = subprocess.run([sys.executable, "-c", script, argument], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.strip().splitlines()[-len(calls):]]


def sdk_calls(script: str, env: dict[str, str], names: list[str], trim=None) -> dict[str, tuple[str, dict]]:
    """One SDK process calling each corpus exchange in ``names`` (the mock replays it by name):
    {name: (its x-test-id, the SDK's result)}."""
    tags = {name: new_tag() for name in names}
    bodies = {name: corpus.load(name)["request"]["body"] for name in names}
    calls = [((trim or dict)(bodies[n]), {"x-test-id": tags[n], "x-mock-exchange": n}) for n in names]
    results = run_sdk(script, env, calls)
    return {name: (tags[name], result) for name, result in zip(names, results, strict=True)}


@pytest.fixture(scope="module")
def openai_sdk(gateway: Gateway) -> dict[str, tuple[str, dict]]:
    env = sdk_env(gateway, OPENAI_API_KEY="sk-test-explicit")
    assert "OPENAI_BASE_URL" not in env  # the default https://api.openai.com/v1 is what gets called
    return sdk_calls(OPENAI_SCRIPT, env, OPENAI_CASES)


@pytest.fixture(scope="module")
def anthropic_sdk(gateway: Gateway) -> dict[str, tuple[str, dict]]:
    env = sdk_env(gateway, ANTHROPIC_API_KEY="sk-ant-test-explicit")
    # The recorded body, cut to the arguments every SDK version takes (the mock replays by name).
    keep = ("model", "max_tokens", "messages", "stream")
    return sdk_calls(ANTHROPIC_SCRIPT, env, ANTHROPIC_CASES, lambda body: {k: v for k, v in body.items() if k in keep})


@pytest.mark.parametrize("name", OPENAI_CASES)
def test_openai_sdk_through_corral_env(gateway: Gateway, mock: MockUpstream, openai_sdk, name: str) -> None:
    ex = corpus.load(name)
    tag, result = openai_sdk[name]
    row = gateway.row_for(tag)
    expect = ex["expect"]
    assert row["mode"] == "explicit"
    assert row["provider"] == "openai"
    assert row["host"] == "127.0.0.1"  # sent on to the mock through the upstream override
    assert row["upstream"] == mock.url
    assert (row["input_tokens"], row["output_tokens"]) == (expect["input_tokens"], expect["output_tokens"])
    assert row["model"] == expect["model"]
    assert bool(row["stream"]) == (expect["stream_format"] != "json")
    assert row["error"] is None and row["complete"]
    sent = next(r for r in mock.requests if r.headers.get("x-test-id") == tag)
    assert sent.headers.get("host") == mock.url.split("//")[1]
    if expect["stream_format"] == "json":
        assert result["usage"]["prompt_tokens"] == expect["input_tokens"]
    else:
        assert result["chunks"] >= 2


@pytest.mark.parametrize("name", ANTHROPIC_CASES)
def test_anthropic_sdk_through_corral_env(gateway: Gateway, anthropic_sdk, name: str) -> None:
    ex = corpus.load(name)
    tag, result = anthropic_sdk[name]
    row = gateway.row_for(tag)
    expect = ex["expect"]
    assert row["mode"] == "explicit"
    assert row["provider"] == "anthropic"
    assert (row["input_tokens"], row["output_tokens"]) == (expect["input_tokens"], expect["output_tokens"])
    assert result["usage"]["output_tokens"] == expect["output_tokens"]
    assert row["error"] is None and row["complete"]


def test_without_the_bundle_the_sdk_refuses_the_interception(
    gateway: Gateway, fresh_mock: MockUpstream, tag: str
) -> None:
    """Control: the bundle really is what makes the intercepted TLS trusted."""
    env = sdk_env(gateway, OPENAI_API_KEY="sk-test-explicit")
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        env.pop(name)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    script = OPENAI_SCRIPT.replace("OpenAI()", "OpenAI(max_retries=0)")
    calls = json.dumps([{"body": body, "headers": {"x-test-id": tag}}])
    proc = subprocess.run([sys.executable, "-c", script, calls], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "certificate" in proc.stderr.lower() or "connection error" in proc.stderr.lower()
    assert fresh_mock.request_count == 0


def connect(gateway: Gateway, target: str, headers: dict[str, str] | None = None) -> tuple[socket.socket, bytes]:
    """Open a CONNECT tunnel through the gateway; returns the socket and the proxy's status line."""
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            break
        head += data
    return sock, head.split(b"\r\n", 1)[0]


@reliability("isolation", "CONNECT to a non-provider host", "a raw tunnel, never decrypted", "nothing")
def test_other_hosts_are_tunnelled_not_intercepted(gateway: Gateway, tag: str) -> None:
    """A TLS server with its own self-signed cert, reached through the proxy by a client that trusts
    ONLY that cert: the handshake succeeds only if the bytes went through untouched."""
    with MockUpstream(tls=True) as tls_mock:
        tls_mock.default = "openai-chat-json-1"
        for host in ("127.0.0.1", "localhost"):
            sock, status = connect(gateway, f"{host}:{tls_mock.port}")
            assert b" 200" in status, status
            ctx = ssl.create_default_context(cafile=str(tls_mock.ca_path))
            with ctx.wrap_socket(sock, server_hostname=host) as tls:
                tls.sendall(
                    f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nx-test-id: {tag}\r\n"
                    "content-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".encode()
                )
                reply = b""
                while chunk := tls.recv(65536):
                    reply += chunk
            assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert tls_mock.request_count == 2
    assert_not_recorded(gateway, tag)


@reliability("isolation", "look-alike host (api.openai.com.example.test)", "tunnelled, not intercepted", "nothing")
def test_look_alike_host_is_tunnelled_not_intercepted(guarded: Gateway, tls_site: MockUpstream, tag: str) -> None:
    """api.openai.com.example.test:443 must be a raw tunnel (the catalog's regexes are anchored). The gateway
    resolves that name to a local TLS server; a client that trusts ONLY that server's certificate completes
    the handshake, which it could not if Corral had intercepted. Control: api.openai.com:443 is intercepted
    by the same gateway."""
    gw = guarded
    tls_site.reset()
    corral_ca = ssl.create_default_context(cafile=str(gw.workdir / "certs" / "mitmproxy-ca-cert.pem"))
    sock, status = connect(gw, "api.openai.com:443", AUTH_HEADER)
    with corral_ca.wrap_socket(sock, server_hostname="api.openai.com") as tls:
        assert tls.getpeercert()["subject"]  # intercepted: Corral's certificate

    only_site = ssl.create_default_context(cafile=str(tls_site.ca_path))
    only_site.check_hostname = False  # the site's cert names localhost; the chain is what matters
    for name in LOOK_ALIKES:
        sock, status = connect(gw, f"{name}:443", AUTH_HEADER)
        assert b" 200" in status, status
        with only_site.wrap_socket(sock, server_hostname=name) as tls:
            tls.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {name}\r\nx-test-id: {tag}\r\n"
                        "content-length: 2\r\nconnection: close\r\n\r\n{}".encode())
            reply = b""
            while chunk := tls.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), name
    assert tls_site.request_count == len(LOOK_ALIKES)
    assert_not_recorded(gw, tag, AUTH_HEADER)


def test_plain_http_absolute_form_is_routed(gateway: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    import httpx

    fresh_mock.enqueue("openai-chat-json-1")
    body = corpus.load("openai-chat-json-1")["request"]["body"]
    with httpx.Client(proxy=gateway.url, trust_env=False, timeout=20) as client:
        resp = client.post("http://api.openai.com/v1/chat/completions", json=body,
                           headers={"authorization": "Bearer sk-test", "x-test-id": tag})
    assert resp.status_code == 200
    row = gateway.row_for(tag)
    assert row["mode"] == "explicit" and row["provider"] == "openai"
    assert row["input_tokens"] == corpus.load("openai-chat-json-1")["expect"]["input_tokens"]


def test_plain_http_to_other_hosts_is_forwarded_not_recorded(
    gateway: Gateway, fresh_mock: MockUpstream, tag: str
) -> None:
    import httpx

    fresh_mock.enqueue("openai-chat-json-1")
    with httpx.Client(proxy=gateway.url, trust_env=False, timeout=20) as client:
        resp = client.post(f"{fresh_mock.url}/v1/chat/completions", json={}, headers={"x-test-id": tag})
    assert resp.status_code == 200 and fresh_mock.request_count == 1
    assert_not_recorded(gateway, tag)


@reliability("file safety", "CA private key", "-", "mode 0600")
def test_ca_key_is_private(gateway: Gateway) -> None:
    key = gateway.workdir / "certs" / "mitmproxy-ca.pem"
    assert key.is_file()
    assert key.stat().st_mode & 0o777 == 0o600


def test_proxyauth_and_extra_intercepted_hosts(guarded: Gateway, fresh_mock: MockUpstream, tag: str) -> None:
    """[gateway] proxyauth: `corral env` carries the credentials, clients without them get 407.
    [gateway] intercept_hosts: one more host handled as a provider (here localhost:443 as openai)."""
    import httpx

    gw = guarded
    env = sdk_env(gw, OPENAI_API_KEY="sk-test-explicit")
    assert env["HTTPS_PROXY"] == f"http://corral:s3cr%40t@127.0.0.1:{gw.port}"
    fresh_mock.enqueue("openai-chat-json-1")
    run_sdk(OPENAI_SCRIPT, env, [({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                                  {"x-test-id": tag})])
    row = gw.row_for(tag)
    assert row["mode"] == "explicit" and row["provider"] == "openai" and row["status"] == 200
    assert "s3cr" not in json.dumps(row)

    trust = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    with httpx.Client(proxy=f"http://127.0.0.1:{gw.port}", verify=trust, trust_env=False, timeout=20) as c:
        with pytest.raises(httpx.ProxyError, match="407"):
            c.get("https://api.openai.com/v1/models")
    fresh_mock.enqueue("openai-chat-json-1")
    tag2 = tag + "-extra"
    with httpx.Client(proxy=env["HTTPS_PROXY"], verify=trust, trust_env=False, timeout=20) as c:
        resp = c.post("https://localhost/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []},
                      headers={"x-test-id": tag2, "authorization": "Bearer sk-test"})
    assert resp.status_code == 200
    row = gw.row_for(tag2)
    assert row["provider"] == "openai" and row["mode"] == "explicit" and row["upstream"] == fresh_mock.url
    assert row["input_tokens"] == corpus.load("openai-chat-json-1")["expect"]["input_tokens"]

    # Reverse-mode clients authenticate with a Proxy-Authorization header (mitmproxy's proxyauth).
    url = gw.base("openai") + "/v1/chat/completions"
    headers = {"x-mock-exchange": "openai-chat-json-1", "x-test-id": tag + "-reverse"}
    assert httpx.post(url, json={}, headers=headers, trust_env=False).status_code == 407
    resp = httpx.post(url, json={}, headers={**headers, **AUTH_HEADER}, trust_env=False)
    assert resp.status_code == 200
    row = gw.row_for(tag + "-reverse")
    assert row["mode"] == "reverse" and "s3cr" not in json.dumps(row)
