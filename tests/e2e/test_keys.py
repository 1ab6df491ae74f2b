"""Gateway keys with the real openai and anthropic SDKs: required keys, scope, the provider credential
swapped in, budgets, and no key anywhere it could leak (database, log).

One gateway for the module with ``[keys] required = true`` and provider credentials from the
environment; each test creates its own keys with `corral keys create` against the gateway's database.
"""

from __future__ import annotations

import json
import os
import sqlite3
import ssl
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types

from tests.support.cli import corral
from tests.support.gateway import Gateway, free_port
from tests.support.mock_upstream import MockUpstream, Reply
from tests.support.reliability import reliability

OPENAI_KEY = "sk-provider-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-provider-9876543210"
GEMINI_KEY = "AIza-provider-gemini-5555"
CONFIG = {
    "keys": {"required": True, "cache_ttl": "0.2", "spend_ttl": "0"},
    "providers.openai": {"api_key": "env:CORRAL_TEST_OPENAI_KEY"},
    "providers.anthropic": {"api_key": "env:CORRAL_TEST_ANTHROPIC_KEY"},
    "providers.gemini": {"api_key": "env:CORRAL_TEST_GEMINI_KEY"},
    # Per-key rate limits are the [[limits]] machinery: the gateway key is the flow's credential.
    "limits": [{"name": "per-key-3rpm", "requests_per_minute": 3, "provider": "anthropic", "per": "credential"}],
    # A model group of two providers (the unified endpoint); one attempt each, so the fallback is immediate.
    "models.fast": {"targets": ["anthropic/claude-haiku-4-5", "openai/gpt-4o-mini"]},
    "retries.providers.anthropic": {"attempts": 1},
}
VIEWER_PORT = free_port()
ISSUED: list[str] = []  # every key the tests created, for the leak check at the end


@pytest.fixture(scope="module")
def gw(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("keys")
    config = {**CONFIG, "viewer": {"listen": f"127.0.0.1:{VIEWER_PORT}"}}
    env = {**os.environ, "CORRAL_TEST_OPENAI_KEY": OPENAI_KEY, "CORRAL_TEST_ANTHROPIC_KEY": ANTHROPIC_KEY,
           "CORRAL_TEST_GEMINI_KEY": GEMINI_KEY}
    g = Gateway(mock.url, config=config, workdir=workdir).start(env=env)
    try:
        yield g
    finally:
        g.stop()


def create_key(gw: Gateway, *args: str) -> str:
    result = corral("keys", "create", "--db", gw.db, "--config", "-", "--json", *args)
    assert result.returncode == 0, result.stderr
    key = json.loads(result.stdout)["key"]
    assert key.startswith("ck-")
    ISSUED.append(key)
    return key


def oai(gw: Gateway, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base("openai") + "/v1", api_key=api_key, max_retries=0)


def chat(client: openai.OpenAI, tag: str, model: str = "gpt-4o-mini"):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-mock-exchange": "openai-chat-json-1", "x-test-id": tag},
    )


def received(mock: MockUpstream, tag: str) -> list:
    return [r for r in list(mock.requests) if r.headers.get("x-test-id") == tag]


@reliability("secrets", "gateway key swapped for the provider key", "its answer; the provider never sees the ck- key",
             "the key's id (flows.gateway_key), never the key")
def test_openai_sdk_key_is_swapped_for_the_provider_key(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    key = create_key(gw, "--name", "app-openai")
    assert chat(oai(gw, key), tag).choices
    [seen] = received(mock, tag)
    assert seen.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert key not in json.dumps(seen.headers)
    row = gw.row_for(tag)
    assert row["gateway_key"] == key[3:11]
    assert row["status"] == 200


def test_explicit_proxy_mode_swaps_the_key_too(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    key = create_key(gw, "--name", "app-explicit")
    trust = ssl.create_default_context(cafile=str(gw.workdir / "certs" / "mitmproxy-ca-cert.pem"))
    with httpx.Client(proxy=gw.url, verify=trust, trust_env=False) as http_client:
        client = openai.OpenAI(api_key=key, max_retries=0, http_client=http_client)  # api.openai.com itself
        assert chat(client, tag).choices
        with pytest.raises(openai.AuthenticationError):
            chat(openai.OpenAI(api_key="sk-not-a-gateway-key", max_retries=0, http_client=http_client), tag)
    [seen] = received(mock, tag)
    assert seen.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    row = gw.row_for(tag)
    assert row["mode"] == "explicit" and row["gateway_key"] == key[3:11]


def test_unified_endpoint_swaps_the_key_for_the_translated_provider(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    key = create_key(gw, "--name", "app-unified", "--providers", "anthropic", "--models", "claude-3-5*")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0,
                           default_headers={"x-mock-exchange": "anthropic-messages-json-1", "x-test-id": tag})
    result = client.chat.completions.create(model="anthropic/claude-3-5-haiku-20241022", max_tokens=64,
                                            messages=[{"role": "user", "content": "hi"}])
    assert result.choices
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model="anthropic/claude-3-opus-20240229", max_tokens=64,
                                       messages=[{"role": "user", "content": "hi"}])
    assert "may not use model 'claude-3-opus-20240229'" in info.value.message
    with pytest.raises(openai.AuthenticationError):  # routed from the body: still no way around the key
        openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-no-gateway-key", max_retries=0).chat.completions.create(
            model="anthropic/claude-3-5-haiku-20241022", max_tokens=8, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-test-id": tag})
    [seen] = received(mock, tag)
    assert seen.headers["x-api-key"] == ANTHROPIC_KEY and "authorization" not in seen.headers


def overloaded() -> Reply:
    body = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).encode()
    return Reply(529, {"content-type": "application/json"}, body)


@reliability("secrets", "a model group falls back with a gateway key (unified endpoint)",
             "the next target's answer; a target outside the key's scope is never tried",
             "each provider got its own configured key, never the ck- key; the left-out target noted in the changes")
def test_model_group_fallback_swaps_the_gateway_key_per_target(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    key = create_key(gw, "--name", "app-group", "--providers", "anthropic,openai")
    mock.enqueue(overloaded(), "openai-chat-json-2")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, default_headers={"x-test-id": tag})
    result = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "Dragons?"}])
    assert result.choices[0].message.content == "YES"
    to_anthropic, to_openai = received(mock, tag)
    assert to_anthropic.headers["x-api-key"] == ANTHROPIC_KEY and "authorization" not in to_anthropic.headers
    assert to_openai.headers["authorization"] == f"Bearer {OPENAI_KEY}" and "x-api-key" not in to_openai.headers
    assert all(key not in v for r in (to_anthropic, to_openai) for v in r.headers.values())
    row = gw.row_for(tag)
    assert row["provider"] == "openai" and row["gateway_key"] == key[3:11]
    assert [a["target"] for a in json.loads(row["attempts"])] == ["anthropic/claude-haiku-4-5", "openai/gpt-4o-mini"]

    # A key that may use Anthropic only: the OpenAI target is left out, the client gets Anthropic's 529.
    scoped = create_key(gw, "--name", "app-group-anthropic", "--providers", "anthropic")
    mock.enqueue(overloaded())
    with pytest.raises(openai.InternalServerError):
        openai.OpenAI(base_url=gw.url + "/v1", api_key=scoped, max_retries=0).chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "Dragons?"}], extra_headers={"x-test-id": tag + "-s"})
    [only] = received(mock, tag + "-s")
    assert only.headers["x-api-key"] == ANTHROPIC_KEY
    assert "openai/gpt-4o-mini left out, gateway key" in gw.row_for(tag + "-s")["corral_changes"]


def test_anthropic_sdk_key_in_x_api_key_is_swapped(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    key = create_key(gw, "--name", "app-anthropic", "--providers", "anthropic")
    client = anthropic.Anthropic(base_url=gw.base("anthropic"), api_key=key, max_retries=0)
    message = client.messages.create(
        model="claude-3-5-haiku-20241022", max_tokens=64, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-mock-exchange": "anthropic-messages-json-1", "x-test-id": tag},
    )
    assert message.content
    [seen] = received(mock, tag)
    assert seen.headers["x-api-key"] == ANTHROPIC_KEY
    assert "authorization" not in seen.headers
    assert key not in json.dumps(seen.headers)


def test_gemini_key_in_the_sdk_header_or_the_query_is_swapped(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    key = create_key(gw, "--name", "app-gemini", "--providers", "gemini")
    headers = {"x-mock-exchange": "gemini-generatecontent-json-1", "x-test-id": tag}
    client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=gw.base("gemini"), headers=headers))
    assert client.models.generate_content(model="gemini-2.0-flash", contents="hello").text
    # The REST form: the key in ?key= (curl, older clients).
    reply = httpx.post(f"{gw.base('gemini')}/v1beta/models/gemini-2.0-flash:generateContent?key={key}",
                       json={"contents": [{"parts": [{"text": "hello"}]}]}, headers=headers)
    assert reply.status_code == 200
    seen = received(mock, tag)
    assert len(seen) == 2 and {r.headers["x-goog-api-key"] for r in seen} == {GEMINI_KEY}
    assert all(key not in r.path and key not in json.dumps(r.headers) for r in seen)


@reliability("isolation", "request without a gateway key when [keys] required", "401 in the provider's shape",
             "the refusal (status 401); nothing sent upstream")
def test_no_key_or_unknown_key_gets_401(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    for presented in ("sk-some-provider-key", "ck-00000000_" + "x" * 43):
        with pytest.raises(openai.AuthenticationError) as info:
            chat(oai(gw, presented), tag)
        assert info.value.status_code == 401
        assert isinstance(info.value.body, dict) and info.value.body.get("code") == "invalid_api_key"
    with pytest.raises(anthropic.AuthenticationError) as ainfo:
        anthropic.Anthropic(base_url=gw.base("anthropic"), api_key="nope", max_retries=0).messages.create(
            model="claude-3-5-haiku-20241022", max_tokens=8, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-test-id": tag})
    assert ainfo.value.status_code == 401
    assert isinstance(ainfo.value.body, dict) and ainfo.value.body["error"]["type"] == "authentication_error"
    assert received(mock, tag) == []


@reliability("isolation", "gateway key used outside its providers or models", "403 in the provider's shape",
             "the refusal (status 403); nothing sent upstream")
def test_out_of_scope_provider_and_model_get_403(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    key = create_key(gw, "--name", "scoped", "--providers", "openai", "--models", "gpt-4o*")
    client = oai(gw, key)
    assert chat(client, tag, model="gpt-4o-mini").choices  # in scope
    with pytest.raises(openai.PermissionDeniedError) as info:
        chat(client, tag, model="o3-mini")
    assert "may not use model 'o3-mini'" in info.value.message
    with pytest.raises(anthropic.PermissionDeniedError) as ainfo:
        anthropic.Anthropic(base_url=gw.base("anthropic"), api_key=key, max_retries=0).messages.create(
            model="claude-3-5-haiku-20241022", max_tokens=8, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-test-id": tag})
    assert "may not use anthropic" in ainfo.value.message
    assert len(received(mock, tag)) == 1  # only the in-scope request left the gateway


def test_revoked_key_gets_401(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    key = create_key(gw, "--name", "to-revoke")
    client = oai(gw, key)
    assert chat(client, tag).choices
    assert corral("keys", "revoke", key[:11], "--db", gw.db, "--config", "-").returncode == 0
    # Revocation is seen within [keys] cache_ttl (0.2 s here): the gateway re-reads the key after it.
    deadline_hits = 0
    while True:
        try:
            chat(client, tag)
        except openai.AuthenticationError as e:
            assert "revoked" in e.message
            break
        deadline_hits += 1
        assert deadline_hits < 200, "revocation not seen"


def test_rotated_key_replaces_the_old_one(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    old = create_key(gw, "--name", "to-rotate")
    assert chat(oai(gw, old), tag).choices
    result = corral("keys", "rotate", old[:11], "--db", gw.db, "--config", "-", "--json")
    new = json.loads(result.stdout)["key"]
    ISSUED.append(new)
    assert new[:11] == old[:11] and new != old
    assert chat(oai(gw, new), tag).choices  # a key the gateway never saw: read from the database at once
    refused = 0
    while refused == 0:  # the old key is refused once its cached verification (0.2 s here) runs out
        try:
            chat(oai(gw, old), tag)
        except openai.AuthenticationError:
            refused += 1
        assert len(received(mock, tag)) < 200, "the rotated-out key kept working"
    assert gw.row_for(tag)["gateway_key"] == old[3:11]


@reliability("isolation", "gateway key over its USD budget", "429 in the provider's shape with x-corral-budget-*",
             "the refusal (status 429); nothing sent upstream")
def test_budget_is_exhausted_after_spend(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    # gpt-4o-mini, 92 in + 17 out tokens: $0.000024 per request (the gateway's estimate once it has seen
    # one); $0.00005 admits two and refuses the third, which would cross it ($0.000072).
    key = create_key(gw, "--name", "budgeted", "--budget-usd", "0.00005", "--period", "day")
    client = oai(gw, key)
    assert chat(client, tag).choices
    assert chat(client, tag).choices
    with pytest.raises(openai.RateLimitError) as info:
        chat(client, tag)
    err = info.value
    assert err.status_code == 429
    assert "budget" in err.message and "budgeted" in err.message and "resets at" in err.message
    assert "would exceed it" in err.message
    headers = err.response.headers
    assert headers["x-corral-budget-limit"] == "0.000050" and headers["x-corral-budget"] == f"key:{key[3:11]}"
    assert float(headers["x-corral-budget-spent"]) == pytest.approx(0.000048, abs=1e-6)
    assert headers["x-corral-budget-period"] == "day"
    assert headers["x-corral-budget-reset"].endswith("T00:00:00Z")
    assert len(received(mock, tag)) == 2
    gw.wait_rows(lambda r: tag in (r.get("request_headers") or ""), 3)
    shown = json.loads(corral("keys", "show", key[:11], "--db", gw.db, "--config", "-", "--json").stdout)
    assert shown["spent_usd"] == pytest.approx(0.000048, abs=1e-6)


def test_per_key_rate_limit_counts_each_gateway_key_apart(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    def ask(key: str):
        return anthropic.Anthropic(base_url=gw.base("anthropic"), api_key=key, max_retries=0).messages.create(
            model="claude-3-5-haiku-20241022", max_tokens=64, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-exchange": "anthropic-messages-json-1", "x-test-id": tag},
        )

    first, second = create_key(gw, "--name", "rl-a"), create_key(gw, "--name", "rl-b")
    for _ in range(3):
        assert ask(first).content
    with pytest.raises(anthropic.RateLimitError) as info:
        ask(first)
    assert "per-key-3rpm" in info.value.message
    assert ask(second).content  # the same provider key upstream, but its own window
    assert {r.headers["x-api-key"] for r in received(mock, tag)} == {ANTHROPIC_KEY}


@reliability("secrets", "gateway keys in the database, log and viewer API", "-",
             "a salted hash and the ck-<id> prefix only")
def test_no_full_key_in_database_log_or_viewer(gw: Gateway, tag: str) -> None:
    key = create_key(gw, "--name", "leakcheck", "--budget-usd", "5", "--period", "month")
    assert chat(oai(gw, key), tag).choices
    gw.row_for(tag)
    assert len(ISSUED) >= 2
    listed = httpx.get(f"http://127.0.0.1:{VIEWER_PORT}/api/keys")
    mine = [k for k in listed.json() if k["name"] == "leakcheck"]
    assert len(mine) == 1 and mine[0]["prefix"] == key[:11] and mine[0]["status"] == "active"
    assert mine[0]["spent_usd"] == pytest.approx(0.000024, abs=1e-6)
    assert "key_hash" not in mine[0] and "salt" not in mine[0]
    log = gw.log()
    for issued in ISSUED:
        secret = issued.split("_", 1)[1]
        assert secret not in listed.text and secret not in log
    for provider_key in (OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY):
        assert provider_key not in log
    if gw.is_postgres:
        rows = gw.query("SELECT * FROM gateway_keys") + gw.query("SELECT * FROM flows")
        raw = json.dumps(rows, default=str).encode()
    else:  # the SQLite file's bytes (every table, free pages too) and its WAL
        path = gw.db.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(FULL)")
        raw = b"".join(open(p, "rb").read() for p in (path, path + "-wal") if os.path.exists(p))
    for issued in ISSUED:
        assert issued.split("_", 1)[1].encode() not in raw
    for provider_key in (OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY):
        assert provider_key.encode() not in raw
