"""Where the response cache keeps its entries, behind a small interface (``CacheBackend``) that the
default backend here and the shared Redis one (addon/cache/redis_backend.py, ``[state] url``) both implement.

The default, ``MemoryDbBackend``, is an in-memory TLRU (cachetools, bounded by bytes, per-entry expiry)
in front of the ``cache_entries`` table in the record database, so entries survive restarts. The event
loop never touches the database: reads and writes run on worker threads (``asyncio.to_thread``; peewee
keeps one connection per thread), and an index of the keys in the table lets a miss be decided in
memory, without any database read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any, Protocol

import cachetools
import peewee

from addon.storage.models import CacheEntry

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Entry:
    key: str
    provider: str
    model: str | None
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stream: bool = False
    # Streams: seconds from the request to the response headers, and [seconds, byte length] per chunk.
    headers_at: float = 0.0
    chunks: list[tuple[float, int]] | None = None
    usage: dict[str, Any] | None = None
    cost_usd: float | None = None
    created_at: float = dataclasses.field(default_factory=time.time)
    expires_at: float = 0.0
    hits: int = 0

    @property
    def size(self) -> int:
        return len(self.body)

    def pieces(self) -> list[tuple[float, bytes]]:
        """The stream as (offset seconds, bytes) chunks, cut from the body by the recorded lengths."""
        out, pos = [], 0
        for offset, length in self.chunks or [(self.headers_at, len(self.body))]:
            out.append((offset, self.body[pos:pos + length]))
            pos += length
        if pos < len(self.body):
            out.append((out[-1][0] if out else 0.0, self.body[pos:]))
        return out

    def to_row(self) -> dict[str, Any]:
        chunks = json.dumps({"headers_at": self.headers_at, "chunks": self.chunks}) if self.chunks is not None else None
        return {
            "key": self.key, "provider": self.provider, "model": self.model, "created_at": self.created_at,
            "expires_at": self.expires_at, "status": self.status, "stream": self.stream,
            "headers": json.dumps(self.headers), "body": self.body, "chunks": chunks,
            "usage": json.dumps(self.usage) if self.usage is not None else None,
            "cost_usd": self.cost_usd, "size": self.size, "hits": self.hits,
        }

    @classmethod
    def from_row(cls, row: CacheEntry) -> Entry:
        timing = json.loads(row.chunks) if row.chunks else None
        return cls(
            key=row.key, provider=row.provider, model=row.model, status=row.status,
            headers=[(k, v) for k, v in json.loads(row.headers)], body=bytes(row.body), stream=bool(row.stream),
            headers_at=timing["headers_at"] if timing else 0.0,
            chunks=[(t, n) for t, n in timing["chunks"]] if timing else None,
            usage=json.loads(row.usage) if row.usage else None, cost_usd=row.cost_usd,
            created_at=row.created_at, expires_at=row.expires_at, hits=row.hits,
        )


class CacheBackend(Protocol):
    async def get(self, key: str) -> Entry | None: ...

    async def put(self, entry: Entry) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def clear(self, provider: str | None = None) -> int: ...

    async def stats(self) -> dict[str, Any]: ...

    async def expire(self) -> int:
        """Drop expired entries and enforce the size limits; returns how many went."""
        ...


class ResponseCache:
    """The response cache as its two addons share it (built in addon/chain.py): CacheLookup makes the
    backend on first need and reads from it, CacheStore writes to it. None: no backend (cache off)."""

    def __init__(self) -> None:
        self.backend: CacheBackend | None = None


class SqlStore:
    """Synchronous operations on the cache table, for worker threads and the CLI (never the event loop)."""

    def __init__(self, db: peewee.Database) -> None:
        self.db = db

    def get(self, key: str, now: float) -> Entry | None:
        row = CacheEntry.get_or_none((CacheEntry.key == key) & (CacheEntry.expires_at > now))
        return Entry.from_row(row) if row is not None else None

    def put(self, entry: Entry) -> None:
        row = entry.to_row()
        update = {getattr(CacheEntry, name): value for name, value in row.items() if name != "key"}
        with self.db.atomic():  # upsert that SQLite (>= 3.24) and PostgreSQL both speak
            CacheEntry.insert(**row).on_conflict(conflict_target=[CacheEntry.key], update=update).execute()

    def delete(self, key: str) -> None:
        CacheEntry.delete().where(CacheEntry.key == key).execute()

    def clear(self, provider: str | None = None) -> int:
        query = CacheEntry.delete()
        if provider:
            query = query.where(CacheEntry.provider == provider)
        return query.execute()

    def keys(self, now: float) -> dict[str, float]:
        query = CacheEntry.select(CacheEntry.key, CacheEntry.expires_at).where(CacheEntry.expires_at > now)
        return {key: expires for key, expires in query.tuples().execute()}

    def add_hits(self, counts: dict[str, int]) -> None:
        with self.db.atomic():
            for key, n in counts.items():
                CacheEntry.update(hits=CacheEntry.hits + n).where(CacheEntry.key == key).execute()

    def expire(self, now: float, max_entries: int, max_bytes: int) -> int:
        """Expired entries go first, then the oldest ones until the table fits both limits."""
        removed = CacheEntry.delete().where(CacheEntry.expires_at <= now).execute()
        count, size = CacheEntry.select(
            peewee.fn.COUNT(CacheEntry.key), peewee.fn.COALESCE(peewee.fn.SUM(CacheEntry.size), 0)
        ).scalar(as_tuple=True)
        if count <= max_entries and size <= max_bytes:
            return removed
        doomed, keep_n, keep_bytes = [], count, size
        oldest = CacheEntry.select(CacheEntry.key, CacheEntry.size).order_by(CacheEntry.created_at).tuples()
        for key, entry_size in oldest.iterator():
            if keep_n <= max_entries and keep_bytes <= max_bytes:
                break
            doomed.append(key)
            keep_n, keep_bytes = keep_n - 1, keep_bytes - entry_size
        for start in range(0, len(doomed), 500):
            removed += CacheEntry.delete().where(CacheEntry.key.in_(doomed[start:start + 500])).execute()
        return removed

    def stats(self, now: float) -> dict[str, Any]:
        fn = peewee.fn
        rows = (CacheEntry.select(CacheEntry.provider, fn.COUNT(CacheEntry.key),
                                  fn.COALESCE(fn.SUM(CacheEntry.size), 0),
                                  fn.COALESCE(fn.SUM(CacheEntry.hits), 0),
                                  fn.COALESCE(fn.SUM(CacheEntry.hits * CacheEntry.cost_usd), 0.0),
                                  fn.SUM(peewee.Case(None, [(CacheEntry.expires_at <= now, 1)], 0)))
                .group_by(CacheEntry.provider).order_by(CacheEntry.provider).tuples())
        providers = {p: {"entries": n, "bytes": b, "hits": h, "saved_usd": round(s, 6), "expired": e or 0}
                     for p, n, b, h, s, e in rows.execute()}
        total = {k: sum(p[k] for p in providers.values()) for k in ("entries", "bytes", "hits", "saved_usd", "expired")}
        return {"total": total, "providers": providers}


class MemoryDbBackend:
    """In-memory TLRU in front of the database table. Reads memory first; a key the table does not hold
    (per the in-memory index, refreshed by ``expire``) is a miss without any database work."""

    def __init__(self, db: peewee.Database, memory_bytes: int, max_entries: int, max_bytes: int) -> None:
        self.store = SqlStore(db)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.memory: cachetools.TLRUCache = cachetools.TLRUCache(
            maxsize=max(1, memory_bytes), ttu=lambda _k, e, _now: e.expires_at, timer=time.time,
            getsizeof=lambda e: e.size + 512,
        )
        self.index: dict[str, float] | None = None  # key -> expires_at of every row; None until loaded
        self.pending_hits: dict[str, int] = {}
        self.hits = self.misses = self.stores = 0

    async def load_index(self) -> None:
        self.index = await asyncio.to_thread(self.store.keys, time.time())

    def get_memory(self, key: str) -> Entry | None:
        """The cheap part of ``get``: no await, no thread hop."""
        return self.memory.get(key)

    async def get(self, key: str) -> Entry | None:
        entry = self.get_memory(key)
        if entry is None:
            now = time.time()
            if self.index is not None and self.index.get(key, 0.0) <= now:
                return None
            entry = await asyncio.to_thread(self.store.get, key, now)
            if entry is not None:
                self._remember(entry)
        if entry is not None:
            self.pending_hits[key] = self.pending_hits.get(key, 0) + 1
        return entry

    def _remember(self, entry: Entry) -> None:
        try:
            self.memory[entry.key] = entry
        except ValueError:
            pass  # larger than the whole memory front: served from the database only

    async def put(self, entry: Entry) -> None:
        self._remember(entry)  # the very next request hits, even before the row is written
        if self.index is not None:
            self.index[entry.key] = entry.expires_at
        await asyncio.to_thread(self.store.put, entry)

    async def delete(self, key: str) -> None:
        self.memory.pop(key, None)
        if self.index is not None:
            self.index.pop(key, None)
        await asyncio.to_thread(self.store.delete, key)

    async def clear(self, provider: str | None = None) -> int:
        for key, entry in list(self.memory.items()):
            if provider is None or entry.provider == provider:
                self.memory.pop(key, None)
        count = await asyncio.to_thread(self.store.clear, provider)
        await self.load_index()
        return count

    async def stats(self) -> dict[str, Any]:
        data = await asyncio.to_thread(self.store.stats, time.time())
        data["memory"] = {"entries": len(self.memory), "bytes": self.memory.currsize}
        return data

    async def expire(self) -> int:
        """Housekeeping (background task): flush hit counts, drop expired and excess rows, and pick up
        what other processes did to the table (``corral cache clear``, other gateways)."""
        hits, self.pending_hits = self.pending_hits, {}
        if hits:
            await asyncio.to_thread(self.store.add_hits, hits)
        removed = await asyncio.to_thread(self.store.expire, time.time(), self.max_entries, self.max_bytes)
        snapshot_at = time.time()
        index = await asyncio.to_thread(self.store.keys, snapshot_at)
        for key in [k for k in self.memory.keys() if k not in index]:
            entry = self.memory.get(key)
            if entry is not None and entry.created_at > snapshot_at - 5:
                index[key] = entry.expires_at  # stored just now; its row may not be committed yet
            else:
                self.memory.pop(key, None)  # deleted elsewhere (corral cache clear)
        self.index = index
        return removed
