"""The viewer's admin API for gateway keys: create, rotate and revoke over HTTP (loopback, or the admin
token), every action audited (`corral keys audit`), and a key created that way never found afterwards
in the database, the log, an export or the viewer's API (a grep over all of them)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator

import httpx
import openai
import pytest

from addon.credentials import fingerprint
from tests.support.cli import corral
from tests.support.gateway import Gateway, free_port, wait_listening
from tests.support.mock_upstream import MockUpstream
from tests.support.reliability import reliability

OPENAI_KEY = "sk-provider-openai-admin-42"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
VIEWER_PORT = free_port()
API = f"http://127.0.0.1:{VIEWER_PORT}/api"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def gw(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {"keys": {"required": True, "cache_ttl": "0.2", "admin_token": "env:CORRAL_TEST_ADMIN_TOKEN"},
              "providers.openai": {"api_key": "env:CORRAL_TEST_OPENAI_KEY"},
              "viewer": {"listen": f"127.0.0.1:{VIEWER_PORT}"}}
    env = {**os.environ, "CORRAL_TEST_OPENAI_KEY": OPENAI_KEY, "CORRAL_TEST_ADMIN_TOKEN": ADMIN_TOKEN}
    g = Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("keys-admin")).start(env=env)
    wait_listening(VIEWER_PORT)
    try:
        yield g
    finally:
        g.stop()


def chat(gw: Gateway, key: str, tag: str):
    return openai.OpenAI(base_url=gw.base("openai") + "/v1", api_key=key, max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-mock-exchange": "openai-chat-json-1", "x-test-id": tag})


def refused_soon(gw: Gateway, key: str, tag: str) -> str:
    """The refusal's message once the gateway's cached verification (0.2 s here) has run out."""
    for _ in range(500):
        try:
            chat(gw, key, tag)
        except openai.AuthenticationError as e:
            return e.message
    raise AssertionError("the key kept working")


@reliability("secrets", "gateway key created over the admin API", "the key, once, in the 201 answer",
             "key_audit row (who, what, when, prefix); the key nowhere: database, log, export, viewer API")
def test_create_rotate_revoke_over_http_audited_and_never_stored(gw: Gateway, mock: MockUpstream, tag: str,
                                                                 tmp_path) -> None:
    created = httpx.post(f"{API}/keys", headers=JSON, json={
        "name": "api-made", "team": "search", "tags": ["env=prod"], "providers": ["openai"], "models": ["gpt-4o*"],
        "budget_usd": 5, "period": "month", "expires": "30d"})
    assert created.status_code == 201, created.text
    body = created.json()
    key, prefix = body["key"], body["prefix"]
    assert key.startswith(prefix + "_") and body["budget_usd"] == 5 and body["providers"] == ["openai"]
    assert body["team"] == "search" and body["tags"] == ["env=prod"]
    assert chat(gw, key, tag).choices
    assert [r.headers["authorization"] for r in mock.requests if r.headers.get("x-test-id") == tag] == [
        f"Bearer {OPENAI_KEY}"]

    rotated = httpx.post(f"{API}/keys/{prefix}/rotate", headers={**JSON, "authorization": f"Bearer {ADMIN_TOKEN}"})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["key"]
    assert new != key and new.startswith(prefix + "_")
    assert chat(gw, new, tag).choices
    refused_soon(gw, key, tag)

    revoked = httpx.post(f"{API}/keys/api-made/revoke", headers=JSON)
    assert revoked.json() == {"prefix": prefix, "name": "api-made", "revoked": True}
    assert "revoked" in refused_soon(gw, new, tag)
    assert httpx.post(f"{API}/keys/api-made/revoke", headers=JSON).json()["revoked"] is False

    audit = json.loads(corral("keys", "audit", prefix, "--db", gw.db, "--config", "-", "--json").stdout)
    assert [(a["action"], a["actor"], a["key"]) for a in audit] == [
        ("create", "loopback", prefix), ("rotate", f"token:{fingerprint(ADMIN_TOKEN)}", prefix),
        ("revoke", "loopback", prefix)]
    assert audit[0]["detail"]["budget_usd"] == 5 and audit[0]["detail"]["team"] == "search"
    table = corral("keys", "audit", "--db", gw.db, "--config", "-").stdout
    assert f"rotate  {prefix}  token:fp_" in table

    # The grep: neither secret anywhere it could have been written or shown since.
    secrets = [k.split("_", 1)[1] for k in (key, new)]
    export = tmp_path / "flows.jsonl"
    assert corral("export", "--db", gw.db, "--config", "-", "--format", "jsonl", "-o", str(export)).returncode == 0
    shown = "".join(httpx.get(f"{API}/{path}").text for path in (
        "keys", "keys/audit", "budgets", "spend?since=1h", "flows?limit=500"))
    flows = httpx.get(f"{API}/flows", params={"limit": 500}).json()["flows"]
    shown += "".join(httpx.get(f"{API}/flows/{f['id']}").text for f in flows)
    path = gw.db.removeprefix("sqlite:///")
    if not gw.is_postgres:
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(FULL)")
        stored = b"".join(open(p, "rb").read() for p in (path, path + "-wal") if os.path.exists(p))
    else:
        stored = json.dumps(gw.query("SELECT * FROM gateway_keys") + gw.query("SELECT * FROM key_audit")
                            + gw.query("SELECT * FROM flows"), default=str).encode()
    for secret in secrets:
        assert secret not in shown and secret not in gw.log() and secret not in export.read_text()
        assert secret.encode() not in stored


def test_admin_calls_need_json_and_no_foreign_origin(gw: Gateway) -> None:
    assert httpx.post(f"{API}/keys", content=b'{"name": "x"}',
                      headers={"content-type": "text/plain"}).status_code == 415  # what a cross-site form sends
    foreign = httpx.post(f"{API}/keys", headers={**JSON, "origin": "http://evil.example"}, json={"name": "x"})
    assert foreign.status_code == 403
    bad = httpx.post(f"{API}/keys", headers=JSON, json={"name": "x", "budget_usd": 1})
    assert bad.status_code == 400 and "needs a period" in bad.json()["error"]
    bad_tag = httpx.post(f"{API}/keys", headers=JSON, json={"name": "x", "tags": ["no-equals-sign"]})
    assert bad_tag.status_code == 400 and "KEY=VALUE" in bad_tag.json()["error"]
    assert httpx.post(f"{API}/keys/ck-00000000/revoke", headers=JSON).status_code == 404
    names = [k["name"] for k in httpx.get(f"{API}/keys").json()]
    assert "x" not in names
