"""`corral flows`: the latest recorded flows, as a table or as JSON lines."""

from __future__ import annotations

import argparse
import json

from addon import money
from addon.cli import common
from addon.cli.table import render_table
from addon.storage import db as dbmod, queries
from addon.storage.models import FLOW_SUMMARY_FIELDS, Flow


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flows", help="show recorded flows, newest first")
    common.add_config_args(p)
    p.add_argument("--limit", type=int, default=50, help="how many flows (default 50)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--full", action="store_true", help="with --json: include headers and bodies")
    p.add_argument("--provider", help="only this provider")
    p.set_defaults(func=run)


def _fmt_tokens(value: int | None) -> str:
    return "-" if value is None else str(value)


def _fmt_cost(row: Flow) -> str:
    return money.cost(row.cost_usd, bool(row.unpriced))


def table(rows: list[Flow]) -> str:
    headers = ["time", "mode", "provider", "model", "status", "stream", "ttfb", "dur", "in", "out", "cost", "cache",
               "error"]
    lines = []
    for r in rows:
        lines.append([
            r.started_at.strftime("%H:%M:%S") if r.started_at else "-",
            r.mode, r.provider or "-", (r.model or "-")[:32], str(r.status or "-"), "yes" if r.stream else "no",
            f"{r.ttfb_ms:.0f}ms" if r.ttfb_ms is not None else "-",
            f"{r.duration_ms:.0f}ms" if r.duration_ms is not None else "-",
            _fmt_tokens(r.input_tokens), _fmt_tokens(r.output_tokens), _fmt_cost(r), r.cache,
            (r.error or r.parse_error or "")[:48].replace("\n", " "),
        ])
    return render_table(headers, lines)


def run(args: argparse.Namespace) -> int:
    settings = common.resolve(args)
    try:
        dbmod.connect(common.db_url(settings), create=False)
    except dbmod.DatabaseError as e:
        print(f"corral: {e}")
        return 1
    query = Flow.select().order_by(Flow.started_at.desc(), Flow.id.desc()).limit(max(0, args.limit))
    if args.provider:
        query = query.where(Flow.provider == args.provider)
    rows = list(query)
    if args.json:
        fields = None if args.full else FLOW_SUMMARY_FIELDS
        for row in rows:
            data = row.__data__
            keys = fields or list(data)
            print(json.dumps({k: queries.iso(data.get(k)) for k in keys}))
    else:
        print(table(rows))
    return 0
