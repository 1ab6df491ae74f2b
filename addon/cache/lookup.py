"""CacheLookup: answers a request from the response cache, without any upstream connection.

Sits after the Router (it needs provider, credential and model) and before the RateLimiter, so a hit
never counts against a quota. Off by default; ``[cache] enabled``, ``providers``, ``models`` or the
request header ``x-corral-cache: use`` turn it on (addon/cache/key.py has the key and the headers).

On a hit it publishes what the meter would have (model, usage of the original answer, stream,
complete) plus ``corral.saved_cost_usd``; the meter leaves the flow alone. CacheStore (after the
Meter) writes new answers into the same ``ResponseCache`` and reads the same ``[cache]`` options.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from mitmproxy import ctx, exceptions, http

from addon import metadata as md, state
from addon.cache import key as cache_key
from addon.cache.backend import CacheBackend, Entry, MemoryDbBackend, ResponseCache
from addon.cache.redis_backend import RedisCacheBackend
from addon.cache.replay import TOKEN_HEADER, ReplayServer
from addon.services import CatalogService, SharedState
from addon.storage.models import database_proxy
from providers.catalog import unknown_provider

logger = logging.getLogger(__name__)

PACES = ("fast", "original")
# Bodies above this are canonicalised and hashed on a worker thread, not on the event loop.
INLINE_KEY_LIMIT = 256 * 1024
EXPIRE_INTERVAL = 5.0  # also how soon a running gateway notices `corral cache clear`


class CacheLookup:
    def __init__(
        self, cache: ResponseCache, shared_state: SharedState, catalog: CatalogService | None = None
    ) -> None:
        self.cache = cache
        self.catalog = catalog  # provider names [cache] providers / shared_providers may use
        self.shared_state = shared_state  # [state] url: entries in Redis or in memory + the record database
        self.policy = cache_key.Policy()
        self.replay = ReplayServer()
        self._housekeeper: asyncio.Task | None = None

    def load(self, loader) -> None:
        loader.add_option("corral_cache_enabled", bool, False, "Cache every provider's answers (exact match).")
        loader.add_option("corral_cache_providers", Sequence[str], [], "Cache only these providers' answers.")
        loader.add_option(
            "corral_cache_models", Sequence[str], [], "Cache answers of models matching these patterns (gpt-4o*)."
        )
        loader.add_option(
            "corral_cache_shared_providers", Sequence[str], [],
            "Providers whose entries all credentials share (by default each API key has its own entries).",
        )
        loader.add_option(
            "corral_cache_ttl", int, 86400, "Seconds an entry lives (x-corral-cache-ttl overrides per request)."
        )
        loader.add_option(
            "corral_cache_max_ttl", int, 30 * 86400,
            "Longest lifetime in seconds an entry may get; longer x-corral-cache-ttl values (inf too) are cut to it.",
        )
        loader.add_option(
            "corral_cache_max_entries", int, 100_000, "Entries kept in the database; the oldest go first."
        )
        loader.add_option(
            "corral_cache_max_bytes", int, 1 << 30, "Body bytes kept in the database; the oldest go first."
        )
        loader.add_option("corral_cache_max_entry_bytes", int, 16 << 20, "Larger answers are not cached.")
        loader.add_option(
            "corral_cache_memory_bytes", int, 64 << 20, "Bytes of entries held in memory in front of the database."
        )
        loader.add_option(
            "corral_cache_replay_pace", str, "fast",
            "How a cached stream is replayed: fast (at once) or original (recorded time to first token and gaps).",
        )

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "corral_cache_replay_pace" in updated and opts.corral_cache_replay_pace not in PACES:
            raise exceptions.OptionsError(f"[cache] replay_pace: expected one of {', '.join(PACES)}, "
                                          f"got {opts.corral_cache_replay_pace!r}")
        for name in ("corral_cache_ttl", "corral_cache_max_ttl", "corral_cache_max_entries", "corral_cache_max_bytes",
                     "corral_cache_max_entry_bytes", "corral_cache_memory_bytes"):
            if name in updated and getattr(opts, name) < 0:
                key = name.removeprefix("corral_cache_")
                raise exceptions.OptionsError(f"[cache] {key}: expected a number >= 0, got {getattr(opts, name)}")
        if self.catalog is not None:
            known = self.catalog.current.names()
            for key in ("providers", "shared_providers"):
                for name in getattr(opts, f"corral_cache_{key}"):
                    if name not in known:
                        raise exceptions.OptionsError(unknown_provider(f"[cache] {key}", name, known))
        self.policy = cache_key.Policy(
            enabled=opts.corral_cache_enabled,
            providers=frozenset(opts.corral_cache_providers),
            models=tuple(opts.corral_cache_models),
            shared_providers=frozenset(opts.corral_cache_shared_providers),
        )
        if "corral_state_url" in updated and self.cache.backend is not None:
            if isinstance(self.cache.backend, RedisCacheBackend) or state.is_redis(self.shared_state.url):
                self.cache.backend = None  # made again on first need, on the new state URL
        if isinstance(self.cache.backend, MemoryDbBackend):
            self.cache.backend.max_entries = opts.corral_cache_max_entries
            self.cache.backend.max_bytes = opts.corral_cache_max_bytes
        elif isinstance(self.cache.backend, RedisCacheBackend):
            self.cache.backend.max_entries = opts.corral_cache_max_entries

    def _ensure_backend(self) -> CacheBackend | None:
        """The backend, made on first need: mitmproxy may deliver flows before ``running()`` finished.
        The Recorder opened the record database during configure; the cache shares that Database object
        (peewee keeps one connection per thread, so worker threads each get their own). No I/O here: the
        key index loads in the background, and until then lookups ask the database (off the loop).
        With ``[state] url = "redis://..."`` the entries live in Redis instead, shared by every gateway."""
        url = self.shared_state.url
        if self.cache.backend is None and state.is_redis(url):
            self.cache.backend = RedisCacheBackend(url, ctx.options.corral_cache_max_entries)
        if self.cache.backend is None and database_proxy.obj is not None:
            opts = ctx.options
            self.cache.backend = MemoryDbBackend(
                database_proxy.obj, opts.corral_cache_memory_bytes,
                opts.corral_cache_max_entries, opts.corral_cache_max_bytes,
            )
        return self.cache.backend

    async def running(self) -> None:
        backend = self._ensure_backend()
        if backend is None:
            logger.warning("corral: no record database open; the response cache is off")
            return
        await self.replay.start()
        self._housekeeper = asyncio.create_task(self._housekeeping())
        if isinstance(backend, MemoryDbBackend):
            try:
                await backend.load_index()
            except Exception:
                logger.exception("corral: cache index could not be loaded; entries are looked up in the database")

    async def done(self) -> None:
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        if isinstance(self.cache.backend, MemoryDbBackend) and self.cache.backend.pending_hits:
            try:
                await asyncio.to_thread(self.cache.backend.store.add_hits, self.cache.backend.pending_hits)
            except Exception:
                logger.exception("corral: cache hit counts not saved")
        await self.replay.stop()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_INTERVAL)
            backend = self._ensure_backend()  # a new [state] url drops the old backend
            if backend is None:
                continue
            try:
                removed = await backend.expire()
                if removed:
                    logger.debug("corral: cache expired %d entries", removed)
            except state.StateUnavailable:
                pass  # Redis down: its breaker logged it once; the next round tries again
            except Exception:  # a busy or broken database must not end housekeeping for good
                logger.warning("corral: cache housekeeping failed", exc_info=True)

    # --- the hook ------------------------------------------------------------------------------

    async def request(self, flow: http.HTTPFlow) -> None:
        meta = flow.metadata
        if md.PROVIDER not in meta or flow.response is not None or md.ROUTE_ERROR in meta:
            return
        asked = cache_key.directives(flow.request.headers)
        if asked.error:
            logger.info("corral: %s", asked.error)
        if asked.mode == "skip":
            meta[md.CACHE] = "skip"
            return
        if asked.mode is None and not self.policy.applies(meta[md.PROVIDER], meta.get(md.MODEL)):
            meta[md.CACHE] = "off"
            return
        backend = self._ensure_backend()
        if backend is None:
            meta[md.CACHE] = "off"
            return
        started_ns = time.time_ns()
        if len(flow.request.raw_content or b"") > INLINE_KEY_LIMIT:
            key = await asyncio.to_thread(cache_key.cache_key, flow, self.policy, asked.namespace)
        else:
            key = cache_key.cache_key(flow, self.policy, asked.namespace)
        meta[md.CACHE_KEY] = key
        ttl = asked.ttl if asked.ttl is not None else ctx.options.corral_cache_ttl
        ttl = min(ttl, ctx.options.corral_cache_max_ttl)  # "inf" parses as a number too
        meta[md.CACHE_TTL] = ttl
        if asked.mode == "refresh":
            meta[md.CACHE] = "refresh"
            return
        try:
            entry = await backend.get(key)
        except state.StateUnavailable as e:  # Redis down: bypass the cache (a miss that stores nothing)
            state.note_degraded(flow, f"cache: {e}; bypassed")
            entry = None
        except Exception:  # an unreadable cache is a miss, never a failed request
            logger.warning("corral: cache read failed", exc_info=True)
            entry = None
        meta[md.CACHE_LOOKUP_AT] = [started_ns, time.time_ns()]
        if entry is None:
            meta[md.CACHE] = "miss"
            return
        self._answer(flow, entry)

    def _answer(self, flow: http.HTTPFlow, entry: Entry) -> None:
        meta = flow.metadata
        meta[md.CACHE] = "hit"
        meta[md.MODEL] = entry.model or meta.get(md.MODEL)
        meta[md.USAGE] = dict(entry.usage or {})
        meta[md.STREAM] = entry.stream
        meta[md.COMPLETE] = True
        if entry.cost_usd is not None:
            meta[md.SAVED_COST_USD] = entry.cost_usd
        if entry.stream and ctx.options.corral_cache_replay_pace == "original" and self.replay.port:
            token = self.replay.register(entry, flow.request.timestamp_start)
            req = flow.request
            req.scheme, req.host, req.port = "http", "127.0.0.1", self.replay.port
            req.headers[TOKEN_HEADER] = token
            return
        headers = [(k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
                   for k, v in entry.headers]
        response = http.Response.make(entry.status, b"", headers)
        response.raw_content = entry.body
        response.headers["content-length"] = str(len(entry.body))
        flow.response = response
