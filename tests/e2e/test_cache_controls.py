"""Response cache: per-request headers, settings that turn it on, `corral cache`, and paced replay.

The pace of a replay itself is tested in process on a fake clock (tests/unit/cache/test_replay.py);
here: which answers are hits, that a paced hit streams through the replay server and a fast one is
one body, and what the record and the cache table hold."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support import corpus
from tests.support.cli import corral
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream
from tests.support.reliability import reliability
from tests.support.waiting import until

KEY = "sk-test-cache-controls-01"
JSON_NAME = "openai-chat-json-1"
STREAM_NAME = "openai-chat-stream-2"


def body_for(tag: str, name: str = JSON_NAME, **changes) -> bytes:
    return json.dumps({**corpus.load(name)["request"]["body"], "user": tag, **changes}).encode()


def post(gw: Gateway, body: bytes, headers: dict[str, str] | None = None, name: str = JSON_NAME,
         prefix: str = "openai") -> httpx.Response:
    hdrs = {"content-type": "application/json", "authorization": f"Bearer {KEY}", "x-mock-exchange": name,
            **(headers or {})}
    with httpx.Client(timeout=20) as client:
        return client.post(gw.base(prefix) + "/v1/chat/completions", content=body, headers=hdrs)


@pytest.fixture
def cgw(cache_gateway: Gateway) -> Gateway:
    return cache_gateway  # the cache on for everything, fast replay (tests/conftest.py)


@pytest.fixture(scope="module")
def paced(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The cache on for gpt-4o* only (paced replay), one shared namespace for openai (any key hits)."""
    config = {"cache": {"replay_pace": "original", "models": ["gpt-4o*"], "shared_providers": ["openai"]}}
    with Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("paced")) as gw:
        yield gw


# --- per-request headers on the default gateway (cache off in its settings) ------------------

def test_cache_is_off_by_default_and_says_so(gateway: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)
    assert post(gateway, body).headers["x-corral-cache"] == "off"
    assert post(gateway, body).headers["x-corral-cache"] == "off"
    assert fresh_mock.request_count == 2


def test_header_use_turns_the_cache_on_for_one_request(gateway: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)
    first = post(gateway, body, {"x-corral-cache": "use"})
    second = post(gateway, body, {"x-corral-cache": "use"})
    assert (first.headers["x-corral-cache"], second.headers["x-corral-cache"]) == ("miss", "hit")
    assert second.content == first.content
    assert fresh_mock.request_count == 1
    assert post(gateway, body).headers["x-corral-cache"] == "off"  # without the header: upstream again
    assert fresh_mock.request_count == 2
    assert "x-corral-cache" not in fresh_mock.requests[0].headers  # Corral's controls stay with Corral
    row = gateway.wait_rows(lambda r: tag in (r.get("request_body") or "") and r["cache"] == "hit")[0]
    assert row["cost_usd"] == 0 and row["saved_cost_usd"] > 0


# --- headers on a gateway with the cache on -------------------------------------------------

def test_skip_bypasses_read_and_write(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)
    assert post(cgw, body, {"x-corral-cache": "skip"}).headers["x-corral-cache"] == "skip"
    assert post(cgw, body).headers["x-corral-cache"] == "miss"  # skip wrote nothing
    assert post(cgw, body, {"x-corral-cache": "skip"}).headers["x-corral-cache"] == "skip"  # and read nothing
    assert fresh_mock.request_count == 3
    assert post(cgw, body).headers["x-corral-cache"] == "hit"
    assert fresh_mock.request_count == 3


def test_cache_control_no_store_is_a_skip(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)
    assert post(cgw, body, {"cache-control": "no-store"}).headers["x-corral-cache"] == "skip"
    assert post(cgw, body).headers["x-corral-cache"] == "miss"
    assert fresh_mock.request_count == 2


def test_refresh_goes_upstream_and_replaces_the_entry(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)
    first = post(cgw, body)
    refreshed = post(cgw, body, {"x-corral-cache": "refresh"}, name="openai-chat-json-2")
    assert refreshed.headers["x-corral-cache"] == "refresh"
    assert fresh_mock.request_count == 2
    after = post(cgw, body)
    assert after.headers["x-corral-cache"] == "hit" and fresh_mock.request_count == 2
    assert after.content == refreshed.content != first.content


def stored_lifetimes(gw: Gateway, since: float) -> list[float]:
    rows = gw.query("SELECT created_at, expires_at FROM cache_entries WHERE created_at >= ?", (since,))
    return [round(r["expires_at"] - r["created_at"], 3) for r in rows]


def test_ttl_header_sets_the_lifetime(cgw: Gateway, fresh_mock, tag: str) -> None:
    # (That an expired entry is neither served nor kept: tests/unit/cache/test_backend.py.)
    body = body_for(tag)
    since = time.time() - 1
    post(cgw, body, {"x-corral-cache-ttl": "7.5"})
    assert post(cgw, body).headers["x-corral-cache"] == "hit"
    assert fresh_mock.request_count == 1
    # The entry's row is written off the event loop; no other test stores one for 7.5 s.
    until(lambda: 7.5 in stored_lifetimes(cgw, since),
          message=f"no entry stored for 7.5 s: {stored_lifetimes(cgw, since)}")


@reliability("bad client input", "x-corral-cache-ttl: inf / 1e400 / a century", "answered as usual",
             "the entry lives at most [cache] max_ttl (30 days by default)")
@pytest.mark.parametrize("ttl", ["inf", "1e400", "3155760000"])
def test_ttl_header_is_clamped_to_the_maximum(cgw: Gateway, fresh_mock, tag: str, ttl: str) -> None:
    since = time.time() - 1
    post(cgw, body_for(tag), {"x-corral-cache-ttl": ttl})
    until(lambda: 30 * 86400 in stored_lifetimes(cgw, since),
          message=f"no entry stored for 30 days: {stored_lifetimes(cgw, since)}")


def test_namespace_header_separates_entries(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)
    post(cgw, body, {"x-corral-cache-namespace": "a"})
    assert post(cgw, body, {"x-corral-cache-namespace": "b"}).headers["x-corral-cache"] == "miss"
    assert post(cgw, body).headers["x-corral-cache"] == "miss"
    assert post(cgw, body, {"x-corral-cache-namespace": "a"}).headers["x-corral-cache"] == "hit"
    assert fresh_mock.request_count == 3
    assert not any(k.startswith("x-corral") for r in fresh_mock.requests for k in r.headers)


def test_secret_query_parameter_is_not_part_of_the_key_but_the_credential_is(
    cgw: Gateway, fresh_mock, tag: str
) -> None:
    name = "gemini-generatecontent-json-1"
    path = "/v1beta/models/gemini-2.0-flash:generateContent"
    content = json.dumps({"contents": [{"parts": [{"text": tag}]}]}).encode()

    def call(key: str) -> httpx.Response:
        with httpx.Client(timeout=20) as client:
            return client.post(cgw.base("gemini") + path + f"?key={key}", content=content,
                               headers={"content-type": "application/json", "x-mock-exchange": name})

    assert call("AIza-one").headers["x-corral-cache"] == "miss"
    assert call("AIza-one").headers["x-corral-cache"] == "hit"
    assert call("AIza-two").headers["x-corral-cache"] == "miss"  # another key: never the same entry
    assert fresh_mock.request_count == 2


# --- settings -------------------------------------------------------------------------------

def test_models_and_shared_providers_settings(paced: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)  # model gpt-4o-mini: matches
    assert post(paced, body).headers["x-corral-cache"] == "miss"
    other = post(paced, body, {"authorization": "Bearer sk-someone-else"})
    assert other.headers["x-corral-cache"] == "hit"  # shared namespace: any key
    assert post(paced, body_for(tag, model="o3-mini")).headers["x-corral-cache"] == "off"
    assert fresh_mock.request_count == 2


def test_cli_stats_and_clear(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)
    post(cgw, body)
    post(cgw, body)

    def cli(*args: str) -> str:
        out = corral("cache", *args, "--db", cgw.db)
        assert out.returncode == 0, out.stderr
        return out.stdout

    # The entry's row is written off the event loop.
    stats = until(lambda: json.loads(cli("stats", "--json"))["providers"].get("openai"), message="never stored")
    assert stats["entries"] >= 1
    assert "removed" in cli("clear", "--provider", "openai")
    assert "openai" not in cli("stats")
    # (A running gateway drops what another process cleared at its next housekeeping round:
    # tests/unit/cache/test_backend.py.)


# --- paced replay ---------------------------------------------------------------------------

def stream_call(gw: Gateway, body: bytes) -> httpx.Response:
    with httpx.Client(timeout=20) as raw:
        resp = raw.post(gw.base("openai") + "/v1/chat/completions", content=body, headers={
            "content-type": "application/json", "authorization": f"Bearer {KEY}", "x-mock-exchange": STREAM_NAME})
    assert resp.status_code == 200
    return resp


def test_paced_replay_streams_the_hit_through_the_replay_server(paced: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag, STREAM_NAME)
    first = stream_call(paced, body)
    second = stream_call(paced, body)
    assert second.headers["x-corral-cache"] == "hit" and fresh_mock.request_count == 1
    assert second.content == first.content
    assert second.headers.get("transfer-encoding") == "chunked" and "content-length" not in second.headers
    # And the SDK's stream iterator works on the paced replay.
    client = openai.OpenAI(base_url=paced.base("openai") + "/v1", api_key=KEY, max_retries=0, timeout=20)
    events = list(client.chat.completions.create(**json.loads(body), extra_headers={"x-mock-exchange": STREAM_NAME}))
    assert events and fresh_mock.request_count == 1
    rows = paced.wait_rows(lambda r: tag in (r.get("request_body") or ""), 3)
    assert [r["cache"] for r in rows] == ["miss", "hit", "hit"] and all(r["complete"] for r in rows)


def test_fast_replay_is_one_body_at_once(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag, STREAM_NAME)
    first = stream_call(cgw, body)
    second = stream_call(cgw, body)
    assert second.headers["x-corral-cache"] == "hit" and fresh_mock.request_count == 1
    assert second.content == first.content
    assert second.headers["content-length"] == str(len(second.content))  # made whole in the request hook


# --- explicit proxy mode ----------------------------------------------------------------------

def explicit_stream(gw: Gateway, body: dict, tag: str) -> list[dict]:
    """The openai SDK at its default base URL (https://api.openai.com), through the gateway as its
    HTTPS proxy, trusting the gateway's CA. (`corral env` and SDKs in their own processes:
    tests/e2e/test_explicit_mode.py.)"""
    ca = gw.workdir / "certs" / "mitmproxy-ca-cert.pem"
    with httpx.Client(proxy=gw.url, verify=ssl.create_default_context(cafile=str(ca)), timeout=20) as http:
        client = openai.OpenAI(api_key="sk-test-explicit-cache", http_client=http, max_retries=0)
        return [c.model_dump() for c in client.chat.completions.create(**body, extra_headers={"x-test-id": tag})]


@pytest.mark.parametrize("pace", ["fast", "original"])
def test_explicit_mode_hits_with_the_sdk(request: pytest.FixtureRequest, fresh_mock, tag: str, pace: str) -> None:
    gw = request.getfixturevalue("cgw" if pace == "fast" else "paced")
    body = json.loads(body_for(tag, STREAM_NAME))
    fresh_mock.default = STREAM_NAME
    first = explicit_stream(gw, body, tag)
    second = explicit_stream(gw, body, tag)
    assert second == first and len(first) >= 2
    rows = gw.wait_rows(lambda r: tag in (r.get("request_headers") or ""), 2)
    assert fresh_mock.request_count == 1, [(r["cache"], r["error"], r["complete"]) for r in rows]
    assert [(r["mode"], r["cache"]) for r in rows] == [("explicit", "miss"), ("explicit", "hit")]
