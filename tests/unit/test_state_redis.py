"""Redis as shared state, at unit level against a real loopback redis-server: the cache backend
contract (round trip with chunk timings, TTL expiry, max_entries, clear per provider, stats, hits),
atomic multi-process admission and token corrections, and the URLs accepted (cluster included)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from addon import state
from addon.cache.backend import Entry
from addon.cache.redis_backend import RedisCacheBackend
from addon.limits.config import parse_limits
from addon.limits.store import LimitsStore
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def url(redis_server: RedisServer) -> str:
    import redis
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


def entry(key: str, provider: str = "openai", ttl: float = 60, **kw) -> Entry:
    now = time.time()
    fields = dict(key=key, provider=provider, model="gpt-4.1", status=200,
                  headers=[("content-type", "text/event-stream")],
                  body=b"data: a\n\ndata: bb\n\ndata: [DONE]\n\n", stream=True, headers_at=0.12,
                  chunks=[(0.15, 9), (0.4, 10), (0.9, 14)], usage={"input_tokens": 3, "output_tokens": 2},
                  cost_usd=0.25, created_at=now, expires_at=now + ttl)
    fields.update(kw)
    return Entry(**fields)


def run(coro):
    return asyncio.run(coro)


def test_round_trip_keeps_chunks_timings_and_counts_hits(url: str) -> None:
    async def go():
        backend = RedisCacheBackend(url)
        original = entry("k1")
        await backend.put(original)
        got = await backend.get("k1")
        again = await backend.get("k1")
        assert await backend.get("nope") is None
        await backend.close()
        return original, got, again

    original, got, again = run(go())
    assert got.body == original.body and got.chunks == original.chunks and got.headers_at == 0.12
    assert got.pieces() == original.pieces()  # paced replay cuts the same chunks at the same offsets
    assert got.headers == original.headers and got.usage == original.usage and got.cost_usd == 0.25
    assert (got.hits, again.hits) == (1, 2)


def test_entries_expire_with_their_redis_ttl(url: str) -> None:
    async def go():
        backend = RedisCacheBackend(url)
        await backend.put(entry("short", ttl=0.3))
        await backend.put(entry("long", ttl=60))
        assert await backend.get("short") is not None
        for _ in range(1000):  # Redis drops it itself after 0.3 s of its own time; ask until it has
            if not await backend.redis.exists("{corral:cache}:e:short"):
                break
            await asyncio.sleep(0.01)
        assert await backend.get("short") is None
        await backend.expire()  # and housekeeping drops its index members
        stats = await backend.stats()
        assert await backend.redis.zscore("{corral:cache}:idx", "short") is None
        await backend.close()
        return stats

    assert run(go())["total"]["entries"] == 1


def test_max_entries_evicts_the_oldest(url: str) -> None:
    async def go():
        backend = RedisCacheBackend(url, max_entries=3)
        for i in range(5):
            await backend.put(entry(f"k{i}", created_at=time.time() + i))
        found = [await backend.get(f"k{i}") is not None for i in range(5)]
        count = await backend.redis.zcard("{corral:cache}:idx")
        await backend.close()
        return found, count

    assert run(go()) == ([False, False, True, True, True], 3)


def test_clear_per_provider_and_stats(url: str) -> None:
    async def go():
        backend = RedisCacheBackend(url)
        await backend.put(entry("a1", "openai"))
        await backend.put(entry("a2", "openai", cost_usd=None))
        await backend.put(entry("b1", "anthropic", body=b"x" * 100, chunks=None, stream=False))
        for _ in range(3):
            await backend.get("a1")
        stats = await backend.stats()
        removed = await backend.clear("openai")
        left = [await backend.get(k) is not None for k in ("a1", "a2", "b1")]
        all_removed = await backend.clear()
        after = await backend.stats()
        await backend.close()
        return stats, removed, left, all_removed, after

    stats, removed, left, all_removed, after = run(go())
    assert stats["providers"]["openai"] == {"entries": 2, "bytes": 2 * 33, "hits": 3, "saved_usd": 0.75, "expired": 0}
    assert stats["providers"]["anthropic"]["bytes"] == 100 and stats["total"]["entries"] == 3
    assert removed == 2 and left == [False, False, True] and all_removed == 1
    assert after["total"]["entries"] == 0 and after["providers"] == {}


def test_unreachable_redis_is_state_unavailable_then_recovers(redis_server: RedisServer) -> None:
    async def go():
        backend = RedisCacheBackend(redis_server.url)
        await backend.put(entry("r1"))
        redis_server.stop()
        with pytest.raises(state.StateUnavailable):
            await backend.get("r1")
        with pytest.raises(state.StateUnavailable):  # the breaker answers at once for a second
            await backend.get("r1")
        redis_server.start()
        backend.breaker.clock = lambda: time.monotonic() + state.RETRY_AFTER_DOWN  # the pause is over
        await backend.put(entry("r2"))  # same client object: it reconnected by itself
        got = await backend.get("r2")
        await backend.close()
        return got

    assert run(go()) is not None


# --- rate limits: atomic across processes ---------------------------------------------------

def test_admission_is_atomic_across_stores(url: str) -> None:
    """Two stores (two connection pools, like two gateways) race for 10 slots: exactly 10 win.
    With check-then-charge (fits, then charge) the interleaved awaits let both take the same slots."""
    [lim] = parse_limits([{"name": "race", "requests_per_minute": 10, "tokens_per_minute": 1000}])

    async def go():
        a, b = LimitsStore(url), LimitsStore(url)

        async def one(store: LimitsStore) -> bool:
            return await store.admit([(w, "k", 1 if w.what == "requests" else 50) for w in lim.windows]) is None

        won = await asyncio.gather(*(one(a if i % 2 else b) for i in range(40)))
        req, tok = lim.windows
        return sum(won), await a.used(req, "k"), await b.used(tok, "k")

    won, used_requests, used_tokens = run(go())
    assert won == 10 and used_requests == 10 and used_tokens == 500


def test_all_or_nothing_admission(url: str) -> None:
    [lim] = parse_limits([{"name": "aon", "requests_per_minute": 5, "tokens_per_minute": 100}])
    req, tok = lim.windows

    async def go():
        store = LimitsStore(url)
        assert await store.admit([(req, "k", 1), (tok, "k", 90)]) is None
        assert await store.admit([(req, "k", 1), (tok, "k", 20)]) == 1  # the token window is full ...
        return await store.used(req, "k"), await store.used(tok, "k")

    assert run(go()) == (1, 90)  # ... so the request window was not charged either


def test_concurrent_corrections_are_exact(url: str) -> None:
    [lim] = parse_limits([{"name": "tpm", "tokens_per_minute": 100_000}])
    [tok] = lim.windows

    async def go():
        a, b = LimitsStore(url), LimitsStore(url)
        await a.admit([(tok, "k", 1000)])
        # 50 corrections from two "gateways" at once: +7 each and -3 each -> +200
        await asyncio.gather(*((a if i % 2 else b).charge(tok, "k", 7 if i < 25 else -3) for i in range(50)))
        used = await a.used(tok, "k")
        # 40 concurrent give-backs of 100 from 1100: the window stops at zero, never below, so the
        # next real charge counts in full (a read-then-decrement would leave it at -2900 and hide it).
        await asyncio.gather(*((a if i % 2 else b).charge(tok, "k", -100) for i in range(40)))
        await a.charge(tok, "k", 50)
        return used, await a.used(tok, "k")

    assert run(go()) == (1000 + 25 * 7 - 25 * 3, 50)


def test_state_urls_accepted() -> None:
    assert state.is_redis("redis://127.0.0.1:6379") and state.is_redis("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
    assert state.is_cluster("redis+cluster://10.0.0.1:7000") and not state.is_cluster("redis://h:1")
    assert not state.is_redis("memory://")
    # Neither connects at construction: parsing the cluster URL is what is checked here.
    store = LimitsStore("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
    assert store.shared and store.cluster
    backend = RedisCacheBackend("redis+cluster://127.0.0.1:7000")
    from redis.asyncio.cluster import RedisCluster
    assert isinstance(backend.redis, RedisCluster)
