"""`corral stats`: per provider and model, requests, tokens, cost, latency percentiles, errors, cache hits."""

from __future__ import annotations

import argparse
import json

from addon import money
from addon.cli import common
from addon.cli.table import render_table
from addon.storage import db as dbmod, queries

COLUMNS = [("provider", "provider"), ("model", "model"), ("requests", "requests"), ("errors", "errors"),
           ("in", "input_tokens"), ("out", "output_tokens"), ("cost", "cost_usd"), ("p50", "duration_p50_ms"),
           ("p95", "duration_p95_ms"), ("ttfb p50", "ttfb_p50_ms"), ("cache hits", "cache_hits"),
           ("saved", "saved_cost_usd")]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="usage, cost, latency and errors per provider and model")
    common.add_config_args(p)
    p.add_argument("--since", default="24h", help="time range: 30m, 24h, 7d, or an ISO time (default 24h)")
    p.add_argument("--provider", help="only this provider")
    p.add_argument("--json", action="store_true", help="the same numbers as JSON (as the viewer's /api/analytics)")
    p.set_defaults(func=run)


def _cell(key: str, value, row: dict) -> str:
    if key == "cost_usd":
        return money.cost(value, row.get("unpriced") or 0)
    if value is None:
        return "-"
    if key.endswith("_ms"):
        return f"{value:.0f}ms"
    if key.endswith("_usd"):
        return money.usd(value)
    return str(value)


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    cells = [[_cell(key, r.get(key), r) for _, key in columns] for r in rows]
    return render_table([h for h, _ in columns], cells)


def run(args: argparse.Namespace) -> int:
    settings = common.resolve(args)
    try:
        since = queries.parse_since(args.since)
        dbmod.connect(common.db_url(settings), create=False)
    except (dbmod.DatabaseError, queries.QueryError) as e:
        print(f"corral: {e}")
        return 1
    data = queries.analytics(queries.Filters(provider=args.provider, since=since))
    if args.json:
        print(json.dumps({k: v for k, v in data.items() if k != "series"}, indent=2))
        return 0
    total = data["total"]
    print(f"since {data['since']}: {total['requests']} requests, {total['errors']} errors, "
          f"{total['input_tokens']} tokens in, {total['output_tokens']} out, "
          f"{money.cost(total['cost_usd'], total['unpriced'])}")
    print()
    print(table(data["by_provider"], [c for c in COLUMNS if c[1] != "model"]))
    print()
    print(table(data["by_model"], COLUMNS))
    return 0
