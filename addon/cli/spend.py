"""`corral spend --by key|team|tag|provider|model`: what the recorded flows cost, per group
(addon/storage/spend.py). Unpriced flows are counted as such, never shown as $0."""

from __future__ import annotations

import argparse
import csv
import io
import json

from addon import money
from addon.cli import common
from addon.cli.table import render_table
from addon.storage import db as dbmod, queries, spend as spendmod

FIELDS = ["flows", "cost_usd", "unpriced", "input_tokens", "output_tokens"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spend", help="recorded cost per gateway key, team, tag, provider or model")
    common.add_config_args(p)
    p.add_argument("--by", choices=spendmod.GROUPS, default="key", help="group by (default key)")
    p.add_argument("--since", default="30d", help="start: 30m, 24h, 7d, or a date/ISO time like 2026-12-01 "
                   "(UTC; default 30d)")
    p.add_argument("--until", help="end (exclusive), same forms as --since (default now)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output (default table)")
    p.set_defaults(func=run)


def _cost(row: dict) -> str:
    return money.cost(row["cost_usd"], row["unpriced"]) if row["cost_usd"] is not None or row["unpriced"] else "-"


def run(args: argparse.Namespace) -> int:
    settings = common.resolve(args)
    try:
        since = queries.parse_since(args.since)
        until = queries.parse_since(args.until) if args.until else None
        dbmod.connect(common.db_url(settings), create=False)
        assert since is not None
        data = spendmod.spend(args.by, since, until)
    except (dbmod.DatabaseError, queries.QueryError) as e:
        print(f"corral: {e}")
        return 1
    rows = data["rows"]
    named = args.by == "key"
    if args.format == "json":
        print(json.dumps({k: v for k, v in data.items() if k != "series"}, indent=2))
        return 0
    if args.format == "csv":
        out = io.StringIO()
        columns = [args.by, *(["name"] if named else []), *FIELDS]
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        # An unpriced group's cost is empty, never 0: a spreadsheet must not sum it as free.
        writer.writerows({**r, "cost_usd": "" if r["cost_usd"] is None else r["cost_usd"]} for r in rows)
        print(out.getvalue(), end="")
        return 0
    headers = [args.by, *(["name"] if named else []), "flows", "cost", "unpriced", "tokens in", "tokens out"]
    table = [[r[args.by], *([r.get("name") or "-"] if named else []), str(r["flows"]), _cost(r),
              str(r["unpriced"]), str(r["input_tokens"]), str(r["output_tokens"])] for r in rows]
    total = data["total"]
    print(f"{data['since'][:19]}Z .. {data['until'][:19]}Z: {total['flows']} flows, {_cost(total)}")
    if table:
        print(render_table(headers, table))
    return 0
