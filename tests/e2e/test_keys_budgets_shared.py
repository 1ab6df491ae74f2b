"""Team and tag budgets across two real gateway processes sharing one Redis and one PostgreSQL database:
admission is one Lua script, so 40 concurrent requests (the real async openai SDK, half to each
gateway) against a team budget with room for exactly 10 admit exactly 10; a $0.01 tag budget stops the
request that would cross it; a revoked key is refused by both gateways within [keys] cache_ttl.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator

import openai
import pytest

from tests.support import pgdb
from tests.support.cli import corral
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream
from tests.support.redis_server import RedisServer
from tests.support.reliability import reliability

OPENAI_KEY = "sk-provider-openai-shared-budgets"
# openai-chat-json-1 answers as gpt-4o-mini-2024-07-18 with 92 input and 17 output tokens; [prices] makes
# that exactly $0.004 per request (92 x $25 + 17 x $100 per million tokens).
ANSWER_MODEL, COST = "gpt-4o-mini-2024-07-18", 0.004


@pytest.fixture(scope="module")
def pair(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Gateway]]:
    pgdb.require()
    redis_server = RedisServer().start()
    url = pgdb.create_database()
    config = {
        "state": {"url": redis_server.url},
        "keys": {"required": True},  # cache_ttl 0.5 s by default: the revocation delay
        "providers.openai": {"api_key": "env:CORRAL_TEST_OPENAI_KEY"},
        f'prices."openai/{ANSWER_MODEL}"': {"input": 25, "output": 100},
        "budgets.team.ml": {"usd": round(COST * 10.5, 9), "period": "day"},
        'budgets.tag."env=prod"': {"usd": 0.01, "period": "day"},
    }
    env = {**os.environ, "CORRAL_TEST_OPENAI_KEY": OPENAI_KEY}
    a = Gateway(mock.url, db=url, config=config, workdir=tmp_path_factory.mktemp("budgets-a"))
    b = Gateway(mock.url, db=url, config=config, workdir=tmp_path_factory.mktemp("budgets-b"))
    try:
        a.start(env=env)
        b.start(env=env)
        yield a, b
    finally:
        a.stop()
        b.stop()
        redis_server.stop()
        pgdb.drop_database(url)


def create_key(gw: Gateway, *args: str) -> str:
    result = corral("keys", "create", "--db", gw.db, "--config", "-", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["key"]


async def ask(gw: Gateway, key: str, tag: str, model: str = "gpt-4o-mini"):
    client = openai.AsyncOpenAI(base_url=gw.base("openai") + "/v1", api_key=key, max_retries=0)
    try:
        return await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-exchange": "openai-chat-json-1", "x-test-id": tag})
    except openai.APIStatusError as e:
        return e
    finally:
        await client.close()


def warm(pair: tuple[Gateway, Gateway], tag: str) -> None:
    """One request per gateway with a key outside every budget: each learns the model's exact cost,
    its admission estimate from then on."""
    key = create_key(pair[0], "--name", f"warm-{tag}")
    for gw in pair:
        assert not isinstance(asyncio.run(ask(gw, key, tag)), Exception)


@reliability("isolation", "40 concurrent requests over two gateways against a budget with room for 10",
             "exactly 10 answered, 30 refused 429 in the provider's shape with x-corral-budget-*",
             "every request (status 200 or 429)")
def test_forty_concurrent_requests_over_two_gateways_admit_exactly_ten(
        pair: tuple[Gateway, Gateway], mock: MockUpstream, tag: str) -> None:
    warm(pair, tag + "-warm")
    key = create_key(pair[0], "--name", "ml-app", "--team", "ml")

    async def burst():
        return await asyncio.gather(*(ask(pair[i % 2], key, tag) for i in range(40)))

    results = asyncio.run(burst())
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert len(results) - len(refused) == 10
    assert len(refused) == 30 and all(isinstance(r, openai.RateLimitError) for r in refused)
    err = refused[0]
    assert isinstance(err.body, dict) and err.body["code"] == "budget_exceeded"
    assert "team ml has spent" in err.message and "daily budget" in err.message and "resets at" in err.message
    headers = err.response.headers
    assert headers["x-corral-budget"] == "team:ml"
    assert headers["x-corral-budget-limit"] == f"{COST * 10.5:.6f}"
    assert headers["x-corral-budget-reset"].endswith("T00:00:00Z") and headers["x-corral-budget-period"] == "day"
    assert sum(1 for r in list(mock.requests) if r.headers.get("x-test-id") == tag) == 10
    shown = json.loads(corral("keys", "show", "ml-app", "--db", pair[0].db, "--config", "-", "--json").stdout)
    assert shown["team"] == "ml"


@reliability("isolation", "request that would cross a team or tag budget", "429 naming the budget and its reset",
             "the refusal (status 429); nothing sent upstream")
def test_a_cent_tag_budget_stops_the_request_that_would_cross_it(
        pair: tuple[Gateway, Gateway], mock: MockUpstream, tag: str) -> None:
    warm(pair, tag + "-warm")
    key = create_key(pair[0], "--name", "prod-app", "--tag", "env=prod")
    answered = [asyncio.run(ask(pair[i % 2], key, tag)) for i in range(3)]
    assert [isinstance(r, Exception) for r in answered] == [False, False, True]  # $0.008 + $0.004 > $0.01
    err = answered[2]
    assert isinstance(err, openai.RateLimitError)
    assert err.response.headers["x-corral-budget"] == "tag:env=prod"
    assert float(err.response.headers["x-corral-budget-spent"]) == pytest.approx(2 * COST)
    assert "tag env=prod has spent $0.008" in err.message


@reliability("secrets", "gateway key revoked while two gateways run", "401 on both within [keys] cache_ttl (0.5 s)",
             "the refusal (status 401)")
def test_revocation_reaches_both_gateways_within_a_second(pair: tuple[Gateway, Gateway], tag: str) -> None:
    key = create_key(pair[0], "--name", "to-revoke-shared")
    for gw in pair:
        assert not isinstance(asyncio.run(ask(gw, key, tag)), Exception)
    assert corral("keys", "revoke", "to-revoke-shared", "--db", pair[0].db, "--config", "-").returncode == 0
    revoked_at = time.monotonic()
    seen: dict[int, float] = {}
    for _attempt in range(400):  # the key is re-read once its cached verification (0.5 s) runs out
        for i, gw in enumerate(pair):
            if i not in seen and isinstance(asyncio.run(ask(gw, key, tag)), openai.AuthenticationError):
                seen[i] = time.monotonic() - revoked_at
        if len(seen) == 2:
            break
    assert len(seen) == 2, "revocation not seen by both gateways"
    print(f"revocation seen after {seen[0]:.2f} s (gateway a), {seen[1]:.2f} s (gateway b)")
