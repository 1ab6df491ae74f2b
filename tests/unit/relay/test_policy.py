"""Retry settings and decisions: Retry-After parsing, settings validation (as options and as corral.toml
writes them), fallback keys per auth style, and the relay's upstream TLS verification (it must verify
exactly as mitmproxy would)."""

from __future__ import annotations

import email.utils
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from addon import metadata as md
from addon.config import ConfigFile
from addon.relay.policy import (
    Policy,
    PolicyError,
    Target,
    parse_fallbacks,
    parse_statuses,
    retry_after_seconds,
    target_headers,
    target_url,
)
from addon.relay.retrier import Retrier
from addon.services import CatalogService
from tests.support.mock_upstream import MockUpstream, Reply
from tests.support.scripted import Scripted, response
from tests.unit.relay.test_retrier import OK, llm_flow

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after": "3"}, 3.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"retry-after-ms": "1500"}, 1.5),
    ({"x-ms-retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ({"retry-after-ms": "nonsense", "retry-after": "2"}, 2.0),
    ({"retry-after": "-1"}, None),
    ({"retry-after": "soon"}, None),
    ({}, None),
])
def test_retry_after_values(headers: dict, expected: float | None) -> None:
    assert retry_after_seconds(headers) == expected


def test_retry_after_http_date() -> None:
    date = email.utils.formatdate(NOW + 30, usegmt=True)
    assert retry_after_seconds({"retry-after": date}, now=NOW) == 30.0
    past = email.utils.formatdate(NOW - 30, usegmt=True)
    assert retry_after_seconds({"retry-after": past}, now=NOW) == 0.0


def test_policy_overrides_and_errors() -> None:
    policy = Policy().merged({"attempts": 5, "statuses": "429, 503", "ttfb_timeout": 2}, "[retries]")
    assert (policy.attempts, policy.statuses, policy.ttfb_timeout) == (5, frozenset({429, 503}), 2.0)
    assert parse_statuses([429, "500"], "x") == {429, 500}
    for bad in ({"attempts": 0}, {"statuses": "4xx"}, {"idle_timeout": 0}, {"ttfb_timeout": "slow"},
                {"retry": 3}, {"enabled": "yes"}):
        with pytest.raises(PolicyError):
            Policy().merged(bad, "[retries]")


def test_fallback_targets_parse_and_key_placement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY2", "sk-second")
    auth = {"openai": "bearer", "anthropic": "x-api-key", "gemini": "query-key"}
    parsed = parse_fallbacks({"openai": {"targets": [
        {"upstream": "https://eu.example/v1/", "api_key_env": "KEY2"},
        {"upstream": "https://res.openai.azure.com", "api_key_env": "KEY2", "auth": "api-key"},
    ]}}, auth)
    eu, azure = parsed["openai"]
    assert eu.upstream == "https://eu.example/v1" and "sk-second" not in repr(eu)
    client = [(b"Host", b"api.openai.com"), (b"Authorization", b"Bearer sk-client"), (b"x-test", b"1")]
    assert target_headers(client, eu) == [
        (b"Host", b"eu.example"),
        (b"x-test", b"1"),
        (b"authorization", b"Bearer sk-second"),
    ]
    assert (b"api-key", b"sk-second") in target_headers(client, azure)
    assert not any(k.lower() == b"authorization" for k, _ in target_headers(client, azure))
    assert target_url("https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions?a=1", eu) == \
        "https://eu.example/v1/chat/completions?a=1"
    gemini = Target("https://g2.example", "k2", "query-key")
    assert target_url("https://g1", "https://g1/v1beta/models/x:generateContent?key=k1&alt=sse", gemini) == \
        "https://g2.example/v1beta/models/x:generateContent?alt=sse&key=k2"
    with pytest.raises(PolicyError, match="NOT_SET_VAR"):
        parse_fallbacks({"openai": {"targets": [{"upstream": "https://x", "api_key_env": "NOT_SET_VAR"}]}}, auth)
    with pytest.raises(PolicyError, match="unknown provider"):
        parse_fallbacks({"nope": {"targets": []}}, auth)
    with pytest.raises(PolicyError, match="http"):
        parse_fallbacks({"openai": {"targets": [{"upstream": "ftp://x"}]}}, auth)


@pytest.fixture
async def chain(tmp_path) -> AsyncIterator[tuple[taddons.context, Retrier]]:
    """ConfigFile, the catalog and the Retrier as the chain runs them: corral.toml becomes options."""
    catalog = CatalogService()
    retrier = Retrier(catalog)
    with taddons.context(ConfigFile(), catalog, retrier) as tctx:
        await retrier.running()
        yield tctx, retrier
        await retrier.done()


def test_bad_retry_settings_are_a_clear_options_error(chain) -> None:
    tctx, retrier = chain
    with pytest.raises(exceptions.OptionsError, match=r"\[retries\] ttfb_timeout must be a number"):
        tctx.configure(retrier, corral_retries_ttfb_timeout="soon")
    with pytest.raises(exceptions.OptionsError, match=r"\[retries.providers.nope\]: unknown provider"):
        tctx.configure(retrier, corral_retries_providers=json.dumps({"nope": {"attempts": 2}}))


async def test_corral_toml_forms(chain, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lists, numbers, per-provider tables and arrays of fallback tables, as a user writes them."""
    tctx, retrier = chain
    monkeypatch.setenv("CORRAL_TEST_KEY_2", "sk-toml-second")
    async with Scripted([response(418), response(418), response(503)]) as primary, Scripted([OK]) as second:
        config = tmp_path / "corral.toml"
        config.write_text(f"""
[providers.openai]
upstream = "{primary.url}"

[retries]
statuses = [418]
backoff = 0.01
backoff_max = 0.02

[retries.providers.openai]
attempts = 2

[[fallbacks.openai.targets]]
upstream = "{second.url}"
api_key_env = "CORRAL_TEST_KEY_2"
""")
        tctx.options.corral_config = str(config)
        assert retrier.policies["openai"].attempts == 2 and retrier.default.statuses == {418}
        first = llm_flow(primary.url)  # 418 twice (statuses = [418], attempts = 2) -> fallback
        await retrier.request(first)
        assert first.response.status_code == 200 and first.metadata[md.UPSTREAM] == second.url
        assert b"authorization: Bearer sk-toml-second" in second.requests[0]
        other = llm_flow(primary.url)  # 503 is not in this list: passed on
        await retrier.request(other)
        assert other.response.status_code == 503 and other.metadata[md.RETRIES] == 0


@pytest.fixture(scope="module")
def tls_mock() -> Iterator[MockUpstream]:
    with MockUpstream(tls=True) as m:
        m.default = Reply.from_exchange("openai-chat-json-1")
        yield m


@pytest.mark.parametrize("trusted", [True, False])
async def test_relay_verifies_upstream_tls_like_mitmproxy(chain, tls_mock: MockUpstream, trusted: bool) -> None:
    tctx, retrier = chain
    tctx.configure(retrier, corral_retries_attempts=2, corral_retries_backoff="0.001",
                   corral_retries_backoff_max="0.002")
    if trusted:
        tctx.configure(retrier, ssl_verify_upstream_trusted_ca=str(tls_mock.ca_path))
    flow = llm_flow(tls_mock.url)
    await retrier.request(flow)
    if trusted:
        assert flow.response.status_code == 200 and flow.metadata[md.RETRIES] == 0
    else:  # the mock's self-signed certificate is not trusted: no answer from it reaches the client
        assert flow.response.status_code == 502
        assert "CERTIFICATE_VERIFY_FAILED" in json.loads(flow.response.content)["error"]["message"]
        tries = flow.metadata[md.ATTEMPTS]
        assert len(tries) == 2 and all(a["status"] is None for a in tries)
