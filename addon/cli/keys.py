"""`corral keys create | list | show | revoke | rotate`: the gateway keys apps present instead of provider keys.

`create` prints the key once; the database keeps a salted hash and the ``ck-<id>`` prefix only
(addon/keys/store.py). A running gateway notices a revocation within ``[keys] cache_ttl`` seconds.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import socket

import peewee

from addon import money
from addon.cli import common
from addon.cli.table import render_table
from addon.keys import admin, budgets, store
from addon.storage import db as dbmod


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="gateway keys: create, list, show, revoke, rotate, audit")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="issue a key (printed once)")
    common.add_config_args(create)
    create.add_argument("--name", required=True, help="who or what uses the key")
    create.add_argument("--team", help="team whose budget ([budgets.team.<name>]) it counts towards")
    create.add_argument("--tag", action="append", metavar="K=V", help="a tag whose budget ([budgets.tag.\"k=v\"]) "
                        "it counts towards; repeatable")
    create.add_argument("--providers", nargs="+", metavar="NAME", help="providers it may use (default: any); "
                        "commas work too: --providers openai,anthropic")
    create.add_argument("--models", nargs="+", metavar="GLOB", help="models it may use, e.g. 'gpt-4o*' (default: any)")
    create.add_argument("--budget-usd", type=float, metavar="X", help="USD it may spend per period")
    create.add_argument("--period", choices=store.PERIODS, default=None,
                        help="budget period (calendar of [keys] timezone, or total)")
    create.add_argument("--expires", metavar="DURATION", help="lifetime, e.g. 30d, 12h, 2w")
    create.add_argument("--json", action="store_true", help="as one JSON object")
    create.set_defaults(func=run_create)
    for name, help_text, func in (("list", "every key (no secrets)", run_list),
                                  ("show", "one key and its spend this period", run_show),
                                  ("revoke", "refuse a key from now on", run_revoke),
                                  ("rotate", "a new secret for a key (printed once); the old one stops working",
                                   run_rotate),
                                  ("audit", "admin actions on keys: who, what, when (CLI and admin API)", run_audit)):
        action = actions.add_parser(name, help=help_text)
        common.add_config_args(action)
        if name == "audit":
            action.add_argument("key", nargs="?", metavar="KEY", help="only this key (ck-<id>, the id or the name)")
        elif name != "list":
            action.add_argument("key", metavar="KEY", help="ck-<id>, the id or the name")
        action.add_argument("--json", action="store_true", help="as JSON")
        action.set_defaults(func=func)


def _db(args: argparse.Namespace, create: bool = False) -> peewee.Database:
    try:
        return dbmod.connect(common.db_url(common.resolve(args)), create=create)
    except dbmod.DatabaseError as e:
        raise SystemExit(f"corral: {e}") from None


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = "?"
    return f"{user}@{socket.gethostname()} (corral keys)"


def _split(values: list[str] | None) -> list[str] | None:
    out = [v.strip() for value in values or [] for v in value.split(",") if v.strip()]
    return out or None


def _jsonable(row: dict) -> dict:
    out = {k: (f"{v:%Y-%m-%dT%H:%M:%SZ}" if isinstance(v, datetime.datetime) else v) for k, v in row.items()}
    for name in ("providers", "models", "tags"):
        out[name] = json.loads(out[name]) if out.get(name) else None
    return out


def _budget(row: dict) -> str:
    return "-" if row["budget_usd"] is None else f"{money.usd(row['budget_usd'])}/{row['period']}"


def run_create(args: argparse.Namespace) -> int:
    if args.budget_usd is not None and (args.budget_usd < 0 or args.period is None):
        raise SystemExit("corral: --budget-usd needs a value >= 0 and --period day|week|month|total")
    try:
        expires = store.utcnow() + store.parse_duration(args.expires) if args.expires else None
    except ValueError as e:
        raise SystemExit(f"corral: --expires: {e}") from None
    for tag in args.tag or ():
        try:
            store.parse_tag(tag)
        except ValueError as e:
            raise SystemExit(f"corral: --tag: {e}") from None
    db = _db(args, create=True)
    token, row = admin.create(db, _actor(), args.name, _split(args.providers), _split(args.models),
                              args.budget_usd, args.period, expires, team=args.team, tags=args.tag)
    if args.json:
        print(json.dumps({**_jsonable(row), "key": token}))
        return 0
    print(f"created {row['prefix']} ({row['name']})")
    print(f"key: {token}")
    print("This is the only time the key is shown; Corral keeps a salted hash of it.")
    return 0


def run_list(args: argparse.Namespace) -> int:
    rows = store.rows(_db(args))
    now = store.utcnow()
    if args.json:
        print(json.dumps([{**_jsonable(r), "status": store.status(r, now)} for r in rows]))
        return 0
    table = [[r["prefix"], r["name"], r.get("team") or "-",
              ",".join(json.loads(r["tags"])) if r.get("tags") else "-", store.status(r, now),
              ",".join(json.loads(r["providers"])) if r["providers"] else "*",
              ",".join(json.loads(r["models"])) if r["models"] else "*", _budget(r),
              f"{r['expires_at']:%Y-%m-%d %H:%M}" if r["expires_at"] else "-"] for r in rows]
    columns = ["key", "name", "team", "tags", "status", "providers", "models", "budget", "expires (UTC)"]
    print(render_table(columns, table))
    return 0


def _find(db: peewee.Database, ref: str) -> dict:
    row = store.find(db, ref)
    if row is None:
        raise SystemExit(f"corral: no key {ref!r} (see `corral keys list`)")
    return row


def run_show(args: argparse.Namespace) -> int:
    settings = common.resolve(args)
    db = _db(args)
    row = _find(db, args.key)
    now = store.utcnow()
    try:
        start, end = store.period_bounds(row["period"] or "total", now, settings.get("corral_keys_timezone", "UTC"))
    except ValueError as e:
        raise SystemExit(f"corral: [keys] timezone: {e}") from None
    try:
        unpriced = float(settings.get("corral_keys_unpriced_usd", 0.01))
    except ValueError:
        raise SystemExit("corral: [keys] unpriced_usd: expected a number") from None
    spent = store.spent(db, row["id"], start, unpriced)
    try:
        configured = [budgets.parse(kind, settings.get(f"corral_budgets_{kind}", "") or "") for kind in ("team", "tag")]
    except ValueError as e:
        raise SystemExit(f"corral: [budgets]: {e}") from None
    shown_budgets = []
    for budget in budgets.applicable(store.record_of(row), *configured):
        b_start, b_end = store.period_bounds(budget.period, now, settings.get("corral_keys_timezone", "UTC"))
        used = store.spent(db, store.key_ids(db, budget.kind, budget.name), b_start, unpriced)
        shown_budgets.append(f"{budget.id} {money.usd(used)} of {money.usd(budget.usd)}/{budget.period}"
                             + (f", resets {b_end:%Y-%m-%dT%H:%M:%SZ}" if b_end else ""))
    history = [f"{a['at']:%Y-%m-%dT%H:%M:%SZ} {a['action']} by {a['actor']}" for a in store.audit_rows(db, row["id"])]
    out = {**_jsonable(row), "status": store.status(row, now), "spent_usd": round(spent, 6),
           "period_start": f"{start:%Y-%m-%dT%H:%M:%SZ}", "period_end": f"{end:%Y-%m-%dT%H:%M:%SZ}" if end else None,
           "budgets": shown_budgets, "audit": history}
    if args.json:
        print(json.dumps(out))
        return 0
    width = max(len(k) for k in out)
    out["budget_usd"] = money.usd(out["budget_usd"])
    out["spent_usd"] = money.usd(out["spent_usd"])
    for name, value in out.items():
        if name in ("audit", "budgets"):
            for i, line in enumerate(value or ["-"]):
                print(f"{name if i == 0 else '':<{width}}  {line}")
            continue
        shown = ",".join(value) if isinstance(value, list) else ("-" if value is None else value)
        print(f"{name:<{width}}  {shown}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    db = _db(args)
    row = _find(db, args.key)
    done = admin.revoke(db, _actor(), row)
    print(f"corral: {row['prefix']} ({row['name']}) " + ("revoked" if done else "was already revoked"))
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    db = _db(args)
    row = _find(db, args.key)
    token = admin.rotate(db, _actor(), row)
    if args.json:
        print(json.dumps({"prefix": row["prefix"], "name": row["name"], "key": token}))
        return 0
    print(f"rotated {row['prefix']} ({row['name']}): scope, budget and spend stay with it")
    print(f"key: {token}")
    print("This is the only time the key is shown; the old key stops working within [keys] cache_ttl seconds.")
    return 0


def run_audit(args: argparse.Namespace) -> int:
    db = _db(args)
    key_id = _find(db, args.key)["id"] if args.key else None
    rows = store.audit_rows(db, key_id)
    if args.json:
        print(json.dumps([{"at": f"{r['at']:%Y-%m-%dT%H:%M:%SZ}", "actor": r["actor"], "action": r["action"],
                           "key": store.PREFIX + r["key_id"],
                           "detail": json.loads(r["detail"]) if r["detail"] else None}
                          for r in rows]))
        return 0
    print(render_table(["at (UTC)", "action", "key", "by"], [
        [f"{r['at']:%Y-%m-%d %H:%M:%S}", r["action"], store.PREFIX + r["key_id"], r["actor"]] for r in rows]))
    return 0
