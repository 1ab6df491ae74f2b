"""Two real gateway processes sharing one Redis (``[state] url``): one request budget for both, one
response cache for both, exact token windows after streams through both; then Redis goes away and
comes back on the same port while the gateways keep running (issue 11).

Gateway A runs with ``[state] on_failure = "open"``, gateway B with ``"closed"``; that only matters
in the outage test, the last one of this module.
"""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from addon.credentials import fingerprint
from tests.support import corpus
from tests.support.cli import corral
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream
from tests.support.redis_server import RedisServer
from tests.support.waiting import until

RPM = 10
STREAM = "openai-chat-stream-1"
STREAM_TOTAL = corpus.load(STREAM)["expect"]["input_tokens"] + corpus.load(STREAM)["expect"]["output_tokens"]
JSON = "openai-chat-json-1"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pair(
    mock: MockUpstream, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Gateway]]:
    def config(on_failure: str) -> dict:
        return {
            "state": {"url": redis_server.url, "on_failure": on_failure},
            "limits": [
                {"name": "rpm", "requests_per_minute": RPM, "provider": "openai", "per": "credential"},
                {"name": "tpm", "tokens_per_minute": 1_000_000, "provider": "openai", "per": "credential"},
            ],
        }
    a = Gateway(mock.url, config=config("open"), workdir=tmp_path_factory.mktemp("redis-a"))
    b = Gateway(mock.url, config=config("closed"), workdir=tmp_path_factory.mktemp("redis-b"))
    with a, b:
        yield a, b


def new_key() -> str:
    return "sk-redis-" + uuid.uuid4().hex


def post(gw: Gateway, key: str, tag: str, cache: str | None = None, body: dict | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", "x-test-id": tag, "x-mock-exchange": JSON}
    if cache:
        headers["x-corral-cache"] = cache
    return httpx.post(gw.base("openai") + "/v1/chat/completions", timeout=20, headers=headers,
                      json=body or {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]})


def upstream_count(mock: MockUpstream, tag: str) -> int:
    return sum(1 for r in list(mock.requests) if r.headers.get("x-test-id") == tag)


def window_used(gw: Gateway, key: str, limit: str) -> int:
    report = httpx.get(gw.url + "/_corral/limits", timeout=10).json()
    lim = next(x for x in report["limits"] if x["name"] == limit)
    bucket = next(b for b in lim["buckets"] if b["key"] == f"credential={fingerprint(key)}")
    return bucket["windows"][0]["used"]


def test_request_limit_is_one_budget_for_both_gateways(
    pair: tuple[Gateway, Gateway], mock: MockUpstream, tag: str
) -> None:
    a, b = pair
    key = new_key()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # 20 at once, half through each gateway
        statuses = list(pool.map(lambda i: post(a if i % 2 else b, key, tag).status_code, range(2 * RPM)))
    assert statuses.count(200) == RPM and statuses.count(429) == RPM, statuses
    assert upstream_count(mock, tag) == RPM  # 10 in total reached the provider, not 10 per gateway
    assert window_used(a, key, "rpm") == RPM and window_used(b, key, "rpm") == RPM


def test_answer_cached_by_one_gateway_is_a_hit_on_the_other(
    pair: tuple[Gateway, Gateway], mock: MockUpstream, tag: str
) -> None:
    a, b = pair
    key = new_key()
    body = {**corpus.load(JSON)["request"]["body"], "user": tag}
    client_a = openai.OpenAI(base_url=a.base("openai") + "/v1", api_key=key, max_retries=0, timeout=20)
    client_b = openai.OpenAI(base_url=b.base("openai") + "/v1", api_key=key, max_retries=0, timeout=20)
    headers = {"x-mock-exchange": JSON, "x-test-id": tag, "x-corral-cache": "use"}
    first = client_a.chat.completions.with_raw_response.create(**body, extra_headers=headers)
    assert first.headers["x-corral-cache"] == "miss" and upstream_count(mock, tag) == 1
    second = client_b.chat.completions.with_raw_response.create(**body, extra_headers=headers)
    assert second.headers["x-corral-cache"] == "hit"
    assert second.parse().model_dump() == first.parse().model_dump()
    assert upstream_count(mock, tag) == 1, "the hit on B must not reach the upstream"
    assert b.row_for(tag)["cache"] == "hit"


def test_token_window_is_exact_after_streams_through_both(
    pair: tuple[Gateway, Gateway], mock: MockUpstream, tag: str
) -> None:
    """Each stream is admitted on an estimate and corrected to its real usage when it ends, from
    whichever gateway carried it: the shared window ends at the exact sum (no per-replica TPM)."""
    a, b = pair
    key = new_key()

    def stream(gw: Gateway) -> int:
        client = openai.OpenAI(base_url=gw.base("openai") + "/v1", api_key=key, max_retries=0, timeout=20)
        chunks = list(client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True}, extra_headers={"x-mock-exchange": STREAM, "x-test-id": tag}))
        usage = chunks[-1].usage
        return usage.prompt_tokens + usage.completion_tokens

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        totals = list(pool.map(lambda i: stream(a if i % 2 else b), range(6)))
    assert totals == [STREAM_TOTAL] * 6
    expected = sum(totals)
    until(lambda: window_used(a, key, "tpm") == expected,  # corrections land right after each stream's end
          message=f"tpm window: {window_used(a, key, 'tpm')} != {expected}")
    assert window_used(b, key, "tpm") == expected


def cli(gw: Gateway, *args: str) -> str:
    done = corral("cache", *args, "--config", str(gw.config_path), "--db", gw.db)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_cache_cli_talks_to_redis_and_a_clear_reaches_every_gateway(
    pair: tuple[Gateway, Gateway], mock: MockUpstream, tag: str
) -> None:
    a, b = pair
    key = new_key()
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "cli " + tag}]}
    assert post(a, key, tag, cache="use", body=body).headers["x-corral-cache"] == "miss"
    assert post(b, key, tag, cache="use", body=body).headers["x-corral-cache"] == "hit"
    stats = json.loads(cli(a, "stats", "--json"))
    assert stats["providers"]["openai"]["entries"] >= 1 and stats["providers"]["openai"]["hits"] >= 1
    assert stats["state"] == b.config_path.read_text().split('url = "')[1].split('"')[0]  # from Redis, not the DB
    assert "removed" in cli(b, "clear", "--provider", "openai")
    # No gateway keeps a copy of its own: the very next lookup on either one is a miss.
    assert post(b, key, tag, cache="use", body=body).headers["x-corral-cache"] == "miss"
    assert upstream_count(mock, tag) == 2
    assert json.loads(cli(a, "stats", "--json"))["providers"]["openai"]["entries"] == 1  # the one just stored


def test_redis_outage_follows_the_policy_and_recovers(pair: tuple[Gateway, Gateway], mock: MockUpstream,
                                                      redis_server: RedisServer, tag: str) -> None:
    a, b = pair
    redis_server.stop()
    try:
        # Limits, on_failure = "open": the request passes, uncounted, marked degraded.
        down_key = new_key()
        opened = post(a, down_key, tag)
        assert opened.status_code == 200 and opened.headers["x-corral-state"] == "degraded"
        # on_failure = "closed": refused in the provider's own error shape.
        closed = post(b, down_key, tag)
        assert closed.status_code == 503 and closed.headers["x-corral-state"] == "degraded"
        assert "rate-limit state unavailable" in closed.json()["error"]["message"]
        # Cache: bypassed (a miss, nothing stored), the call still answered.
        body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": tag}]}
        before = upstream_count(mock, tag)
        for _ in range(2):
            resp = post(a, down_key, tag, cache="use", body=body)
            assert resp.status_code == 200 and resp.headers["x-corral-cache"] == "miss"
            assert resp.headers["x-corral-state"] == "degraded"
        assert upstream_count(mock, tag) == before + 2
        rows = a.wait_rows(lambda r: tag in (r.get("request_headers") or ""), 3)
        assert all(r["status"] == 200 and not r["error"] for r in rows)  # a degraded success is no error
        assert all("x-corral-state" in (r["response_headers"] or "") for r in rows)
        assert "rate-limit state unavailable" in b.row_for(tag)["error"]
    finally:
        redis_server.start()  # same port, empty: the gateways were never restarted

    def recovered() -> bool:  # both gateways use Redis again (each one's breakers pause after a failure)
        probe = {"model": "gpt-4.1", "messages": [{"role": "user", "content": uuid.uuid4().hex}]}
        answers = [post(gw, new_key(), tag + "-probe", cache="use", body=probe) for gw in (a, b)]
        return all("x-corral-state" not in answer.headers for answer in answers)

    until(recovered, message="the gateways did not take Redis back")
    # Limits enforced again, on both gateways, in one shared window.
    key = new_key()
    statuses = [post(a if i % 2 else b, key, tag).status_code for i in range(RPM + 1)]
    assert statuses == [200] * RPM + [429]
    # Cache hits again, across gateways.
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "after " + tag}]}
    other = new_key()
    first, second = post(a, other, tag, cache="use", body=body), post(b, other, tag, cache="use", body=body)
    assert (first.headers["x-corral-cache"], second.headers["x-corral-cache"]) == ("miss", "hit")
    assert "x-corral-state" not in second.headers
    assert json.loads(second.content) == json.loads(first.content)
