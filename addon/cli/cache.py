"""`corral cache stats` and `corral cache clear [--provider X]`: the response cache's table.

A running gateway notices a clear within a few seconds (its housekeeping re-reads the table's keys).
With ``[state] url = "redis://..."`` the cache lives in Redis: both commands talk to it, and a clear
takes effect on every gateway at once (they keep no copy of their own).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from addon import money, state
from addon.cache.backend import SqlStore
from addon.cache.redis_backend import RedisCacheBackend
from addon.cli import common
from addon.cli.table import render_table
from addon.storage import db as dbmod
from addon.storage.models import CacheEntry


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="response cache: stats, clear")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    stats = actions.add_parser("stats", help="entries, bytes, hits and savings per provider")
    common.add_config_args(stats)
    stats.add_argument("--json", action="store_true", help="as one JSON object")
    stats.set_defaults(func=run_stats)
    clear = actions.add_parser("clear", help="delete cached answers")
    common.add_config_args(clear)
    clear.add_argument("--provider", help="only this provider's entries")
    clear.set_defaults(func=run_clear)


def _store(args: argparse.Namespace) -> SqlStore | None:
    settings = common.resolve(args)
    try:
        store = SqlStore(dbmod.connect(common.db_url(settings), create=False))
    except dbmod.DatabaseError as e:
        print(f"corral: {e}")
        return None
    # A database from before the cache existed gets the (empty) table here.
    store.db.create_tables([CacheEntry], safe=True)
    return store


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _redis_url(args: argparse.Namespace) -> str | None:
    url = common.resolve(args).get("corral_state_url") or ""
    return url if state.is_redis(url) else None


def _on_redis(url: str, action: str, *params):
    async def run():
        backend = RedisCacheBackend(url)
        try:
            return await getattr(backend, action)(*params)
        finally:
            await backend.close()
    try:
        return asyncio.run(run())
    except state.StateUnavailable as e:
        raise SystemExit(f"corral: {e}") from None


def run_stats(args: argparse.Namespace) -> int:
    url = _redis_url(args)
    if url:
        data = _on_redis(url, "stats")
    else:
        store = _store(args)
        if store is None:
            return 1
        data = store.stats(time.time())
    if args.json:
        print(json.dumps(data))
        return 0
    rows = [[name, str(p["entries"]), _size(p["bytes"]), str(p["hits"]), money.usd(p["saved_usd"]), str(p["expired"])]
            for name, p in data["providers"].items()]
    t = data["total"]
    rows.append(
        ["total", str(t["entries"]), _size(t["bytes"]), str(t["hits"]), money.usd(t["saved_usd"]), str(t["expired"])]
    )
    headers = ["provider", "entries", "size", "hits", "saved", "expired"]
    print(render_table(headers, rows))
    return 0


def run_clear(args: argparse.Namespace) -> int:
    url = _redis_url(args)
    if url:
        removed = _on_redis(url, "clear", args.provider)
    else:
        store = _store(args)
        if store is None:
            return 1
        removed = store.clear(args.provider)
    print(f"corral: removed {removed} cache entr{'y' if removed == 1 else 'ies'}"
          + (f" of {args.provider}" if args.provider else ""))
    return 0
