"""Retry settings and decisions: Retry-After parsing, settings validation, fallback keys per auth style,
and the relay's upstream TLS verification (it must verify exactly as mitmproxy would)."""

from __future__ import annotations

import email.utils
import json
import time

import httpx
import pytest

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
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream, Reply

# Wall-clock timing on a shared 2-core machine: a failure is re-run up to twice before it counts
# (a real defect fails all three runs).
pytestmark = pytest.mark.flaky(reruns=2, reruns_delay=1)


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
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= retry_after_seconds({"retry-after": date}, now=now) <= 31
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert retry_after_seconds({"retry-after": past}, now=now) == 0.0


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


def test_bad_retry_settings_stop_the_gateway_with_a_clear_message(tmp_path) -> None:
    gw = Gateway(None, config={"retries": {"ttfb_timeout": "soon"}}, workdir=tmp_path)
    with pytest.raises(RuntimeError, match=r"\[retries\] ttfb_timeout must be a number"):
        gw.start()
    gw.stop()


@pytest.fixture(scope="module")
def tls_mock():
    with MockUpstream(tls=True) as m:
        m.default = Reply.from_exchange("openai-chat-json-1")
        yield m


@pytest.mark.parametrize("trusted", [True, False])
def test_relay_verifies_upstream_tls_like_mitmproxy(tls_mock: MockUpstream, tmp_path, trusted: bool) -> None:
    sets = [f"ssl_verify_upstream_trusted_ca={tls_mock.ca_path}"] if trusted else []
    config = {"retries": {"attempts": 2, "backoff": 0.01, "backoff_max": 0.02}}
    with Gateway(tls_mock.url, config=config, sets=sets, workdir=tmp_path) as gw:
        with httpx.Client(timeout=30) as client:
            resp = client.post(gw.base("openai") + "/v1/chat/completions", json={"model": "m", "messages": []},
                               headers={"x-test-id": "tls"})
        if trusted:
            assert resp.status_code == 200 and "x-corral-retries" not in resp.headers  # first try: untouched
            assert gw.row_for("tls")["attempts"]  # it went through the relay
        else:  # the mock's self-signed certificate is not trusted: no answer from it reaches the client
            assert resp.status_code == 502
            assert "CERTIFICATE_VERIFY_FAILED" in resp.json()["error"]["message"]
            attempts = json.loads(gw.row_for("tls")["attempts"])
            assert len(attempts) == 2 and all(a["status"] is None for a in attempts)


def test_corral_toml_forms(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lists, numbers, per-provider tables and arrays of fallback tables, as a user writes them."""
    monkeypatch.setenv("CORRAL_TEST_KEY_2", "sk-toml-second")
    with MockUpstream() as primary, MockUpstream() as second:
        gw = Gateway(None, workdir=tmp_path)
        gw.config_path.write_text(f"""
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
        primary.enqueue(Reply(418, {}, b"teapot"), Reply(418, {}, b"teapot"), Reply(503, {}, b"down"))
        second.default = Reply.from_exchange("openai-chat-json-1")
        with gw, httpx.Client(timeout=30) as client:
            url = gw.base("openai") + "/v1/chat/completions"
            first = client.post(url, json={"model": "m"})  # 418 twice (statuses = [418], attempts = 2) -> fallback
            assert first.status_code == 200 and first.headers["x-corral-upstream"] == second.url
            assert second.requests[-1].headers["authorization"] == "Bearer sk-toml-second"
            other = client.post(url, json={"model": "m"})  # 503 is not in this list: passed on
            assert other.status_code == 503 and "x-corral-retries" not in other.headers
