"""`corral cache stats` and `corral cache clear [--provider X]`: the response cache's table.

A running gateway notices a clear within a few seconds (its housekeeping re-reads the table's keys).
"""

from __future__ import annotations

import argparse
import json
import time

from addon import cli_common
from addon.cache_backend import SqlStore
from addon.storage import db as dbmod
from addon.storage.models import CacheEntry


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="response cache: stats, clear")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    stats = actions.add_parser("stats", help="entries, bytes, hits and savings per provider")
    cli_common.add_config_args(stats)
    stats.add_argument("--json", action="store_true", help="as one JSON object")
    stats.set_defaults(func=run_stats)
    clear = actions.add_parser("clear", help="delete cached answers")
    cli_common.add_config_args(clear)
    clear.add_argument("--provider", help="only this provider's entries")
    clear.set_defaults(func=run_clear)


def _store(args: argparse.Namespace) -> SqlStore | None:
    settings = cli_common.resolve(args)
    try:
        return SqlStore(dbmod.connect(cli_common.db_url(settings), create=False))
    except dbmod.DatabaseError as e:
        print(f"corral: {e}")
        return None


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run_stats(args: argparse.Namespace) -> int:
    store = _store(args)
    if store is None:
        return 1
    # A database from before the cache existed gets the (empty) table here.
    store.db.create_tables([CacheEntry], safe=True)
    data = store.stats(time.time())
    if args.json:
        print(json.dumps(data))
        return 0
    rows = [[name, str(p["entries"]), _size(p["bytes"]), str(p["hits"]), f"${p['saved_usd']:.6f}", str(p["expired"])]
            for name, p in data["providers"].items()]
    t = data["total"]
    rows.append(["total", str(t["entries"]), _size(t["bytes"]), str(t["hits"]), f"${t['saved_usd']:.6f}", str(t["expired"])])
    headers = ["provider", "entries", "size", "hits", "saved", "expired"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    return 0


def run_clear(args: argparse.Namespace) -> int:
    store = _store(args)
    if store is None:
        return 1
    store.db.create_tables([CacheEntry], safe=True)
    removed = store.clear(args.provider)
    print(f"corral: removed {removed} cache entr{'y' if removed == 1 else 'ies'}"
          + (f" of {args.provider}" if args.provider else ""))
    return 0
