"""The cache's storage and key, directly: limits, expiry, stats, canonical form."""

from __future__ import annotations

import asyncio
import time

import pytest

from addon.cache.backend import Entry, MemoryDbBackend, SqlStore
from addon.cache.key import canonical_body, canonical_path
from addon.storage import db as dbmod


@pytest.fixture
def store(tmp_path) -> SqlStore:
    return SqlStore(dbmod.connect(f"sqlite:///{tmp_path / 'c.db'}"))


def entry(key: str, size: int = 10, ttl: float = 60, provider: str = "openai", age: float = 0) -> Entry:
    now = time.time() - age
    return Entry(key=key, provider=provider, model="m", status=200, headers=[("content-type", "text/event-stream")],
                 body=b"x" * size, stream=True, headers_at=0.01, chunks=[(0.02, size // 2), (0.05, size - size // 2)],
                 usage={"input_tokens": 3, "output_tokens": 4}, cost_usd=0.5, created_at=now, expires_at=now + ttl)


def test_round_trip_keeps_chunks_and_timings(store: SqlStore) -> None:
    store.put(entry("a"))
    got = store.get("a", time.time())
    assert got is not None and got.pieces() == [(0.02, b"x" * 5), (0.05, b"x" * 5)]
    assert got.usage == {"input_tokens": 3, "output_tokens": 4}
    assert got.headers == [("content-type", "text/event-stream")]
    store.put(entry("a", size=4))  # a refresh replaces the entry
    assert store.get("a", time.time()).body == b"xxxx"


def test_expired_entries_are_neither_served_nor_kept(store: SqlStore) -> None:
    store.put(entry("old", ttl=-1))
    store.put(entry("new"))
    assert store.get("old", time.time()) is None
    assert store.expire(time.time(), 100, 1 << 20) == 1
    assert set(store.keys(time.time())) == {"new"}


def test_size_limits_drop_the_oldest_first(store: SqlStore) -> None:
    for i in range(5):
        store.put(entry(f"k{i}", size=100, age=10 - i))
    store.expire(time.time(), max_entries=3, max_bytes=1 << 20)
    assert set(store.keys(time.time())) == {"k2", "k3", "k4"}
    store.expire(time.time(), max_entries=100, max_bytes=150)
    assert set(store.keys(time.time())) == {"k4"}


def test_stats_and_clear_per_provider(store: SqlStore) -> None:
    store.put(entry("a"))
    store.put(entry("b", provider="anthropic"))
    store.add_hits({"a": 3})
    stats = store.stats(time.time())
    assert stats["providers"]["openai"] == {"entries": 1, "bytes": 10, "hits": 3, "saved_usd": 1.5, "expired": 0}
    assert stats["total"]["entries"] == 2
    assert store.clear("openai") == 1
    assert set(store.keys(time.time())) == {"b"}


def test_memory_front_miss_needs_no_database_and_sees_external_clear(store: SqlStore) -> None:
    async def scenario() -> None:
        backend = MemoryDbBackend(store.db, 1 << 20, 100, 1 << 30)
        await backend.load_index()
        await backend.put(entry("a"))
        assert backend.get_memory("a") is not None
        assert await backend.get("unknown") is None
        store.clear()  # `corral cache clear` from another process
        backend.memory["a"].created_at -= 60  # not "just stored"
        await backend.expire()
        assert await backend.get("a") is None

    asyncio.run(scenario())


def test_canonical_forms() -> None:
    assert canonical_body(b'{"b": 1,  "a": [1, 2]}') == canonical_body(b'{"a":[1,2],"b":1}')
    assert canonical_body(b'{"a": 1}') != canonical_body(b'{"a": 1.5}')
    assert canonical_body(b"not json") == b"not json"
    assert canonical_path("/v1/x?key=secret&b=2&a=1") == canonical_path("/v1/x?a=1&b=2&key=other") == "/v1/x?a=1&b=2"
