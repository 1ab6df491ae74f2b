"""RedisCacheBackend: the response cache in a shared Redis (``[state] url = "redis://..."``), so an
answer stored by one gateway is a hit on every other.

Layout (every key carries the hash tag ``{corral:cache}``, so a Redis Cluster keeps them in one slot and
the scripts below stay single-slot):
- ``{corral:cache}:e:<key>``   hash: ``m`` entry metadata (JSON, chunk timings included), ``b`` body,
  ``h`` hits, ``p`` provider, ``c`` cost; expires with the entry (Redis TTL, PEXPIREAT).
- ``{corral:cache}:idx``       sorted set key -> created_at: the oldest go first beyond ``max_entries``.
- ``{corral:cache}:p:<name>``  sorted set key -> expires_at per provider: stats and ``clear --provider``.
- ``{corral:cache}:providers`` set of provider names.

No in-process copy: every lookup asks Redis (one round trip on the event loop, redis.asyncio), so
``corral cache clear`` on any machine takes effect everywhere at once. Failures raise `StateUnavailable`
(through a `Breaker`); the cache addons treat that as a miss and store nothing.
"""

from __future__ import annotations

import json
import time
from typing import Any

from addon import state
from addon.cache.backend import Entry

PREFIX = "{corral:cache}:"
IDX = PREFIX + "idx"
PROVIDERS = PREFIX + "providers"


def entry_key(key: str) -> str:
    return f"{PREFIX}e:{key}"


def provider_key(name: str) -> str:
    return f"{PREFIX}p:{name}"


# KEYS: entry, idx, provider zset, providers set.
# ARGV: key, provider, meta, body, cost, created, expires (ms epoch), max_entries
PUT = """
redis.call('hset', KEYS[1], 'm', ARGV[3], 'b', ARGV[4], 'h', 0, 'p', ARGV[2], 'c', ARGV[5])
redis.call('pexpireat', KEYS[1], ARGV[7])
redis.call('zadd', KEYS[2], ARGV[6], ARGV[1])
redis.call('zadd', KEYS[3], tonumber(ARGV[7]) / 1000, ARGV[1])
redis.call('sadd', KEYS[4], ARGV[2])
local excess = redis.call('zcard', KEYS[2]) - tonumber(ARGV[8])
local removed = 0
if excess > 0 then
  local oldest = redis.call('zpopmin', KEYS[2], excess)
  for i = 1, #oldest, 2 do
    local k = oldest[i]
    local ek = ARGV[9] .. 'e:' .. k
    local p = redis.call('hget', ek, 'p')
    redis.call('del', ek)
    if p then redis.call('zrem', ARGV[9] .. 'p:' .. p, k) end
    removed = removed + 1
  end
end
return removed
"""

# KEYS: entry. Counts the hit only if the entry is still there (HINCRBY would re-create it without TTL).
GET = """
if redis.call('exists', KEYS[1]) == 0 then return false end
redis.call('hincrby', KEYS[1], 'h', 1)
return redis.call('hmget', KEYS[1], 'm', 'b', 'h')
"""

# KEYS: idx, providers. ARGV: prefix, now, provider ('' = all). Drops expired members (clear=0) or all (clear=1).
SWEEP = """
local names
if ARGV[3] ~= '' then names = {ARGV[3]} else names = redis.call('smembers', KEYS[2]) end
local removed = 0
for _, name in ipairs(names) do
  local pk = ARGV[1] .. 'p:' .. name
  local keys
  if ARGV[4] == '1' then
    keys = redis.call('zrange', pk, 0, -1)
  else
    keys = redis.call('zrangebyscore', pk, '-inf', ARGV[2])
  end
  for _, k in ipairs(keys) do
    removed = removed + redis.call('del', ARGV[1] .. 'e:' .. k)
    redis.call('zrem', KEYS[1], k)
    redis.call('zrem', pk, k)
  end
  if redis.call('zcard', pk) == 0 then redis.call('srem', KEYS[2], name) end
end
return removed
"""


class RedisCacheBackend:
    """CacheBackend on redis.asyncio. ``max_entries`` bounds the entry count (oldest evicted first, inside
    the put script); ``max_bytes`` is left to Redis's own ``maxmemory`` (entries all carry TTLs, so
    ``maxmemory-policy volatile-lru`` evicts them)."""

    def __init__(self, url: str, max_entries: int = 100_000) -> None:
        self.url = url
        self.max_entries = max_entries
        self.redis = state.async_client(url)
        self.breaker = state.Breaker("cache")
        self._put = self.redis.register_script(PUT)
        self._get = self.redis.register_script(GET)
        self._sweep = self.redis.register_script(SWEEP)

    async def _guard(self, call):
        return await self.breaker.guard(call)

    async def get(self, key: str) -> Entry | None:
        found = await self._guard(self._get(keys=[entry_key(key)]))
        if not found:
            return None
        meta, body, hits = found
        entry = _from_meta(key, json.loads(meta), body or b"", int(hits or 0))
        return entry if entry.expires_at > time.time() else None

    async def put(self, entry: Entry) -> None:
        meta = {
            "provider": entry.provider, "model": entry.model, "status": entry.status, "headers": entry.headers,
            "stream": entry.stream, "headers_at": entry.headers_at, "chunks": entry.chunks, "usage": entry.usage,
            "cost_usd": entry.cost_usd, "created_at": entry.created_at, "expires_at": entry.expires_at,
        }
        keys = [entry_key(entry.key), IDX, provider_key(entry.provider), PROVIDERS]
        args = [entry.key, entry.provider, json.dumps(meta), entry.body,
                "" if entry.cost_usd is None else repr(entry.cost_usd), repr(entry.created_at),
                int(entry.expires_at * 1000), max(0, self.max_entries), PREFIX]
        await self._guard(self._put(keys=keys, args=args))

    async def delete(self, key: str) -> None:
        # The index members left behind are dropped by the next sweep of their expiry, or by a clear.
        await self._guard(self.redis.delete(entry_key(key)))

    async def clear(self, provider: str | None = None) -> int:
        return int(
            await self._guard(self._sweep(keys=[IDX, PROVIDERS], args=[PREFIX, time.time(), provider or "", "1"]))
        )

    async def expire(self) -> int:
        """Index members of entries whose TTL ran out (Redis dropped the entries themselves)."""
        return int(await self._guard(self._sweep(keys=[IDX, PROVIDERS], args=[PREFIX, time.time(), "", "0"])))

    async def stats(self) -> dict[str, Any]:
        """Entries, bytes, hits and savings per provider; read in pipelined batches, never one big script."""
        now = time.time()
        providers: dict[str, dict[str, Any]] = {}
        names = sorted(
            n.decode() if isinstance(n, bytes) else n for n in await self._guard(self.redis.smembers(PROVIDERS))
        )
        for name in names:
            keys = await self._guard(self.redis.zrangebyscore(provider_key(name), now, "+inf"))
            row = {"entries": 0, "bytes": 0, "hits": 0, "saved_usd": 0.0, "expired": 0}
            for start in range(0, len(keys), 500):
                pipe = self.redis.pipeline(transaction=False)
                for k in keys[start:start + 500]:
                    k = k.decode() if isinstance(k, bytes) else k
                    pipe.hmget(entry_key(k), "h", "c")
                    pipe.hstrlen(entry_key(k), "b")
                found = await self._guard(pipe.execute())
                for (hits, cost), size in zip(found[::2], found[1::2], strict=True):
                    if hits is None:
                        continue  # evicted or deleted in between
                    row["entries"] += 1
                    row["bytes"] += int(size)
                    row["hits"] += int(hits)
                    row["saved_usd"] += int(hits) * float(cost) if cost else 0.0
            row["saved_usd"] = round(row["saved_usd"], 6)
            if row["entries"]:
                providers[name] = row
        total = {k: sum(p[k] for p in providers.values()) for k in ("entries", "bytes", "hits", "saved_usd", "expired")}
        return {"total": total, "providers": providers, "state": _safe_url(self.url)}

    async def close(self) -> None:
        await self.redis.aclose()


def _from_meta(key: str, meta: dict[str, Any], body: bytes, hits: int) -> Entry:
    return Entry(
        key=key, provider=meta["provider"], model=meta.get("model"), status=meta["status"],
        headers=[(k, v) for k, v in meta["headers"]], body=bytes(body), stream=bool(meta.get("stream")),
        headers_at=meta.get("headers_at") or 0.0,
        chunks=[(t, n) for t, n in meta["chunks"]] if meta.get("chunks") is not None else None,
        usage=meta.get("usage"), cost_usd=meta.get("cost_usd"),
        created_at=meta["created_at"], expires_at=meta["expires_at"], hits=hits,
    )


def _safe_url(url: str) -> str:
    """The URL without a password, for output."""
    scheme, sep, rest = url.partition("://")
    _creds, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{'***@' if at else ''}{host}"
