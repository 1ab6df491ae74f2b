"""Every recorded exchange whose host the catalog intercepts, replayed in explicit-proxy mode: the
client talks HTTPS to the provider's real host name through the proxy (CONNECT), trusting only the
bundle `corral env` printed; the test config sends the intercepted traffic to the mock.

This is the only way Bedrock works (SigV4 signs the host), so it is where Bedrock is proven.
"""

from __future__ import annotations

import json
import ssl
import urllib.parse

import httpx
import pytest

from providers.catalog import Catalog
from tests.e2e.test_explicit_mode import corral_env
from tests.support import corpus
from tests.support.gateway import Gateway

CATALOG = Catalog.load()


def _intercepted(name: str) -> bool:
    url = urllib.parse.urlsplit(corpus.load(name)["request"]["url"])
    return url.scheme == "https" and CATALOG.by_host(url.hostname or "", url.port or 443) is not None


NAMES = [n for n in corpus.names() if _intercepted(n)]


@pytest.fixture(scope="module")
def proxy_client(gateway: Gateway):
    env = corral_env(gateway)
    trust = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    with httpx.Client(proxy=env["HTTPS_PROXY"], verify=trust, timeout=20, trust_env=False) as client:
        yield client


def test_bedrock_and_every_family_are_covered() -> None:
    assert {corpus.load(n)["provider"] for n in NAMES} >= {"bedrock", "openai", "anthropic", "gemini", "cohere", "groq"}


@pytest.mark.parametrize("name", NAMES)
def test_exchange_through_the_explicit_proxy(
    gateway: Gateway, fresh_mock, proxy_client: httpx.Client, tag: str, name: str
) -> None:
    ex = corpus.load(name)
    body = ex["request"].get("body")
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode() if body is not None else b""
    resp = proxy_client.request(
        ex["request"]["method"], ex["request"]["url"], content=content,
        headers={"content-type": "application/json", "x-mock-exchange": name, "x-test-id": tag,
                 "accept-encoding": "identity", "authorization": "Bearer sk-explicit-corpus"},
    )
    assert resp.status_code == ex["response"]["status"]
    if ex["response"].get("body_base64") and ex.get("expect", {}).get("content_encoding") == "gzip":
        assert resp.content == ex["response"]["body_text"].encode()
    else:
        assert resp.content == corpus.response_bytes(ex)
    row = gateway.row_for(tag)
    assert row["mode"] == "explicit"
    expect = ex["expect"]
    if ex["response"]["status"] < 400:
        assert row["model"] == expect["model"]
        assert row["input_tokens"] == expect["input_tokens"]
        assert row["output_tokens"] == expect["output_tokens"]
        assert row["complete"]
    else:
        assert row["error"] and row["input_tokens"] is None
