"""`corral flows`: the latest recorded flows, as a table or as JSON lines, filtered; ``--follow`` keeps
printing flows as they are recorded, like ``tail -f``."""

from __future__ import annotations

import argparse
import datetime
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import peewee
from mitmproxy import exceptions

from addon import money
from addon.cli import common
from addon.cli.table import render_table
from addon.cli.text import printable
from addon.services import catalog_from_options
from addon.storage import db as dbmod, queries
from addon.storage.models import FLOW_SUMMARY_FIELDS, Flow
from providers.catalog import did_you_mean

HEADERS = ["time", "mode", "provider", "model", "status", "stream", "ttfb", "dur", "in", "out", "cost", "cache",
           "retries", "error"]
ERROR_CHARS = 48
MODEL_CHARS = 32
FOLLOW_POLL = 0.5  # seconds between looks at the record while following
# Rows are written when a flow ends, with the time it started: a flow still running when a poll looks
# can land later with an earlier start. Following looks this far back for rows it has not shown yet.
FOLLOW_LOOKBACK = datetime.timedelta(minutes=15)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flows", help="show recorded flows, newest first (--follow: oldest first, then new ones)")
    common.add_config_args(p)
    p.add_argument("--limit", type=int, default=50, help="how many flows (default 50)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--full", action="store_true", help="with --json: include headers and bodies")
    p.add_argument("--provider", help="only this provider")
    p.add_argument("--model", help="only this model")
    p.add_argument("--status", metavar="CODE|CLASS", help="only this status: 429, 4xx, 5xx, ... or none (no response)")
    p.add_argument("--errors", action="store_true", help="only flows that failed (status >= 400, error or none)")
    p.add_argument("--since", metavar="TIME", help="only flows since: 30m, 24h, 7d or an ISO time")
    p.add_argument("--cache", choices=["hit", "miss", "refresh", "skip", "off"], help="only this cache outcome")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing flows as they are recorded (like tail -f); Ctrl-C stops")
    p.set_defaults(func=run)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt_tokens(value: int | None) -> str:
    return "-" if value is None else str(value)


def cells(r: Flow) -> list[str]:
    """One row's cells; client-chosen text escaped for the terminal (also for --follow, which prints
    lines itself rather than through render_table)."""
    return [
        r.started_at.strftime("%H:%M:%S") if r.started_at else "-",
        r.mode, printable(r.provider or "-"), clip(printable(_model(r)), MODEL_CHARS), str(r.status or "-"),
        "yes" if r.stream else "no",
        f"{r.ttfb_ms:.0f}ms" if r.ttfb_ms is not None else "-",
        f"{r.duration_ms:.0f}ms" if r.duration_ms is not None else "-",
        _fmt_tokens(r.input_tokens), _fmt_tokens(r.output_tokens), money.cost(r.cost_usd, bool(r.unpriced)),
        r.cache, str(r.retries or 0),
        clip(printable(" ".join((r.error or r.parse_error or "").split())), ERROR_CHARS),  # one line
    ]


def _model(r: Flow) -> str:
    """The model that answered; for a model group (unified endpoint) also the alias the client named."""
    model = r.model or "-"
    return f"{r.model_alias}: {model}" if r.model_alias else model


def table(rows: list[Flow]) -> str:
    return render_table(HEADERS, [cells(r) for r in rows])


def _status_filter(value: str) -> peewee.Expression | None:
    value = value.lower()
    if value.isdigit() and len(value) == 3:
        return Flow.status == int(value)
    if value in queries.STATUS_CLASSES:
        return None  # queries.Filters does classes
    raise queries.QueryError(f"--status must be a code (429), a class ({', '.join(queries.STATUS_CLASSES)}), "
                             f"got {value!r}")


def build_query(args: argparse.Namespace) -> peewee.ModelSelect[Flow]:
    status = args.status
    exact = _status_filter(status) if status else None
    filters = queries.Filters(provider=args.provider, model=args.model, cache=args.cache,
                              status=status.lower() if status and exact is None else None,
                              since=queries.parse_since(args.since))
    query = filters.where(Flow.select())
    if exact is not None:
        query = query.where(exact)
    if args.errors:
        query = query.where((Flow.status >= 400) | Flow.status.is_null() | Flow.error.is_null(False))
    return query


def check_provider(args: argparse.Namespace, settings: dict[str, Any]) -> str | None:
    """"no such provider" when ``--provider`` names neither a provider of the catalog in force nor one
    in the record (an empty table would read as "no traffic")."""
    if not args.provider:
        return None
    try:
        catalog, _ = catalog_from_options(settings.get("corral_providers", ""),
                                          settings.get("corral_gateway_intercept_hosts") or [])
        known = set(catalog.names())
    except exceptions.OptionsError:
        known = set()
    known |= {str(p) for p in Flow.select(Flow.provider).distinct().scalars() if p}
    if args.provider in known:
        return None
    return f"corral: no such provider {args.provider!r}{did_you_mean(args.provider, known)}; see `corral providers`"


def _json_line(row: Flow, full: bool) -> str:
    data = row.__data__
    keys = list(data) if full else FLOW_SUMMARY_FIELDS
    return json.dumps({k: queries.iso(data.get(k)) for k in keys})


def follow(query: peewee.ModelSelect[Flow], limit: int, emit: Callable[[str], None], as_json: bool, full: bool,
           sleep: Callable[[float], None] = time.sleep, polls: int | None = None,
           now: Callable[[], datetime.datetime] = queries.utcnow) -> None:
    """The newest ``limit`` rows oldest first, then every row recorded later, as it appears.
    ``polls`` bounds the loop and ``now`` is the clock (tests); by default it runs until interrupted."""
    latest = list(query.order_by(Flow.started_at.desc(), Flow.id.desc()).limit(max(0, limit)))[::-1]
    seen: dict[str, datetime.datetime] = {}
    head = Flow.select(Flow.started_at).order_by(Flow.started_at.desc()).limit(1).scalar()
    floor = (head or now()) - FOLLOW_LOOKBACK
    for row in query.where(Flow.started_at >= floor).select(Flow.id, Flow.started_at):
        seen[row.id] = row.started_at
    widths = [len(h) for h in HEADERS]
    if not as_json:
        rendered = [cells(r) for r in latest]
        widths = [max([w, *(len(c[i]) for c in rendered)]) for i, w in enumerate(widths)]
        emit(_line(HEADERS, widths))
        for c in rendered:
            emit(_line(c, widths))
    else:
        for r in latest:
            emit(_json_line(r, full))
    done = 0
    while polls is None or done < polls:
        sleep(FOLLOW_POLL)
        done += 1
        floor = now() - FOLLOW_LOOKBACK
        fresh = [r for r in query.where(Flow.started_at >= floor).order_by(Flow.started_at, Flow.id)
                 if r.id not in seen]
        for r in fresh:
            seen[r.id] = r.started_at
            emit(_json_line(r, full) if as_json else _line(cells(r), widths))
        for fid in [fid for fid, started in seen.items() if started < floor]:
            del seen[fid]


def _line(row: Iterable[str], widths: list[int]) -> str:
    return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()


def run(args: argparse.Namespace) -> int:
    settings = common.resolve(args)
    try:
        dbmod.connect(common.db_url(settings), create=False)
        query = build_query(args)
    except (dbmod.DatabaseError, queries.QueryError) as e:
        print(f"corral: {e}")
        return 1
    if (problem := check_provider(args, settings)) is not None:
        print(problem)
        return 1
    if args.follow:
        follow(query, args.limit, lambda line: print(line, flush=True), args.json, args.full)
        return 0
    rows = list(query.order_by(Flow.started_at.desc(), Flow.id.desc()).limit(max(0, args.limit)))
    if args.json:
        for row in rows:
            print(_json_line(row, args.full))
    else:
        print(table(rows))
    return 0
