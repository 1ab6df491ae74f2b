"""Rate limits that reject: native 429s with Retry-After, per-credential buckets, the record, the CLI.

One gateway for the module; each test uses its own API key, so with ``per = "credential"`` every test
has its own fresh buckets.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.support.cli import corral
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream
from tests.support.reliability import reliability

LIMITS = [
    {"name": "openai-5rpm", "requests_per_minute": 5, "provider": "openai", "per": "credential"},
    {"name": "anthropic-5rpm", "requests_per_minute": 5, "provider": "anthropic", "per": "credential"},
]


@pytest.fixture(scope="module")
def gw(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with Gateway(mock.url, config={"limits": LIMITS}, workdir=tmp_path_factory.mktemp("limits")) as g:
        yield g


def key() -> str:
    return "sk-limits-" + uuid.uuid4().hex


def oai(gw: Gateway, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base("openai") + "/v1", api_key=api_key, max_retries=0)


def chat(client: openai.OpenAI, tag: str):
    return client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-mock-exchange": "openai-chat-json-1", "x-test-id": tag},
    )


def upstream_count(mock: MockUpstream, tag: str) -> int:
    return sum(1 for r in list(mock.requests) if r.headers.get("x-test-id") == tag)


def assert_limit_headers(headers: httpx.Headers, name: str) -> None:
    retry_after = headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 60
    assert headers["x-corral-ratelimit-name"] == name
    assert headers["x-corral-ratelimit-limit"] == "5"
    assert headers["x-corral-ratelimit-remaining"] == "0"
    assert int(headers["x-corral-ratelimit-reset"]) >= 1


def test_sixth_openai_request_gets_native_429(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    client = oai(gw, key())
    for _ in range(5):
        assert chat(client, tag).choices
    with pytest.raises(openai.RateLimitError) as info:
        chat(client, tag)
    err = info.value
    assert err.status_code == 429
    assert "rate limited by corral" in err.message and "openai-5rpm" in err.message
    assert isinstance(err.body, dict) and err.body.get("type") == "rate_limit_error"  # OpenAI's error shape
    assert_limit_headers(err.response.headers, "openai-5rpm")
    assert upstream_count(mock, tag) == 5  # the sixth never left the gateway


def test_sixth_anthropic_request_gets_native_429(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    client = anthropic.Anthropic(base_url=gw.base("anthropic"), api_key=key(), max_retries=0)

    def send():
        return client.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-exchange": "anthropic-messages-json-1", "x-test-id": tag},
        )

    for _ in range(5):
        assert send().content
    with pytest.raises(anthropic.RateLimitError) as info:
        send()
    err = info.value
    assert err.status_code == 429
    assert "rate limited by corral" in err.message
    assert err.body["type"] == "error" and err.body["error"]["type"] == "rate_limit_error"  # Anthropic's shape
    assert_limit_headers(err.response.headers, "anthropic-5rpm")
    assert upstream_count(mock, tag) == 5


@reliability(
    "isolation",
    "two credentials under a per-credential limit",
    "each has its own budget",
    "429 rows only for the exhausted key",
)
def test_credentials_have_independent_limits(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    first, second = oai(gw, key()), oai(gw, key())
    for _ in range(5):
        chat(first, tag)
    with pytest.raises(openai.RateLimitError):
        chat(first, tag)
    for _ in range(5):  # the other key's bucket is untouched
        assert chat(second, tag).choices
    with pytest.raises(openai.RateLimitError):
        chat(second, tag)
    assert upstream_count(mock, tag) == 10


def test_rejections_are_recorded_and_shown(gw: Gateway, tag: str) -> None:
    client = oai(gw, key())
    for _ in range(5):
        chat(client, tag)
    with pytest.raises(openai.RateLimitError):
        chat(client, tag)
    rows = gw.wait_rows(lambda r: tag in (r.get("request_headers") or ""), 6)
    rejected = [r for r in rows if r["status"] == 429]
    assert len(rejected) == 1
    assert rejected[0]["error"].startswith("rate limited by corral")
    assert rejected[0]["wait_ms"] is None  # rejected at once, never held
    assert all(r["status"] == 200 and r["error"] is None for r in rows if r is not rejected[0])
    flows = corral("flows", "--db", gw.db, "--limit", "20")
    assert "429" in flows.stdout and "rate limited by corral" in flows.stdout


def test_limits_endpoint_and_cli_show_current_usage(gw: Gateway, tag: str) -> None:
    api_key = key()
    client = oai(gw, api_key)
    for _ in range(3):
        chat(client, tag)
    report = httpx.get(gw.url + "/_corral/limits").json()
    limit = next(lim for lim in report["limits"] if lim["name"] == "openai-5rpm")
    assert limit["windows"] == ["5 requests per minute"] and limit["per"] == ["credential"]
    from addon.credentials import fingerprint
    bucket = next(b for b in limit["buckets"] if b["key"] == f"credential={fingerprint(api_key)}")
    assert bucket["windows"][0]["used"] == 3 and bucket["windows"][0]["limit"] == 5
    out = corral("limits", "--config", str(gw.config_path), "--listen", f"127.0.0.1:{gw.port}")
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if fingerprint(api_key) in ln)
    assert "3/5" in line


def test_unknown_corral_endpoint_is_404_and_not_forwarded(gw: Gateway, mock: MockUpstream) -> None:
    before = mock.request_count
    resp = httpx.get(gw.url + "/_corral/nothing-here")
    assert resp.status_code == 404
    assert mock.request_count == before
