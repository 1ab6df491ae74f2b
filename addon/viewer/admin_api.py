"""The viewer's key administration and spend endpoints (addon/viewer/api.py has the read-only rest).

| path | answer |
|---|---|
| GET /api/keys | gateway keys: prefix, name, scope, budget, status, spend this period; never a key or its hash |
| POST /api/keys | admin: create a key; JSON {name, team, tags, providers, models, budget_usd, period, expires}; 201 with the key, once |
| POST /api/keys/<ref>/revoke | admin: revoke (ref: ck-<id>, id or name) |
| POST /api/keys/<ref>/rotate | admin: a new secret, in the answer once |
| GET /api/keys/audit | admin actions: who, what, when, key prefix (?key=<ref>) |
| GET /api/budgets | budgets with their spend this period (near/over their limit first) and the alerts fired |
| GET /api/spend | recorded cost per ?by=key|team|tag|provider|model over ?since ?until, with a series per group |

Admin calls need ``[keys] admin_token`` as a Bearer token, or a loopback client (addon/keys/admin.py);
they must be ``Content-Type: application/json``, which a cross-site form cannot send without a CORS
preflight this server never grants, and a foreign ``Origin`` is refused.
"""  # noqa: E501 - a markdown table keeps one row per line

from __future__ import annotations

import json
from typing import Any

import peewee
from mitmproxy import ctx

from addon.keys import admin, store
from addon.keys.alerts import parse_thresholds
from addon.storage import queries, spend as spendmod
from addon.storage.models import BudgetAlert, database_proxy
from addon.viewer.api import Base, run_query


def _settings() -> tuple[float, str]:
    return float(getattr(ctx.options, "corral_keys_unpriced_usd", "0.01")), getattr(ctx.options,
                                                                                   "corral_keys_timezone", "UTC")


def _db() -> peewee.Database:
    """The database itself (the admin functions take one; peewee keeps a connection per thread)."""
    db = database_proxy.obj
    assert db is not None
    return db


class KeysHandler(Base):
    actor: str | None = None

    def prepare(self) -> None:
        if self.request.method != "POST":
            super().prepare()
            return
        self.set_header("Cache-Control", "no-store")
        if self.host_refused():
            return
        keys_admin = self.viewer.admin
        origin = self.request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] != self.request.host:
            self.send({"error": "admin API: cross-origin request refused"}, 403)
            return
        if keys_admin is not None:
            self.actor = keys_admin.actor(self.request.headers.get("Authorization"),
                                          self.get_query_argument("token", None), self.request.remote_ip,
                                          self.viewer.token())
        if self.actor is None:
            self.send({"error": "admin API: needs [keys] admin_token (Authorization: Bearer) or a loopback client"},
                      403)
            return
        if self.request.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
            self.send({"error": "admin API: Content-Type must be application/json"}, 415)

    async def get(self, ref: str | None = None, action: str | None = None) -> None:
        if ref is not None:
            self.send({"error": "not found"}, 404)
            return
        unpriced, tz = _settings()
        self.send(await run_query(lambda: store.summary(database_proxy, unpriced, tz)))

    async def post(self, ref: str | None = None, action: str | None = None) -> None:
        assert self.actor is not None
        actor = self.actor
        if ref is None:
            try:
                body = json.loads(self.request.body or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("expected a JSON object")
                admin.check_create(body.get("name"), body.get("budget_usd"), body.get("period"), body.get("expires"))
                expires = store.utcnow() + store.parse_duration(body["expires"]) if body.get("expires") else None
                lists = {n: _list(body.get(n), n) for n in ("providers", "models", "tags")}
                for tag in lists["tags"] or ():
                    store.parse_tag(tag)
                team = body.get("team")
                if team is not None and (not isinstance(team, str) or not team.strip() or len(team) > 255):
                    raise ValueError("team: a non-empty string of at most 255 characters")
            except (ValueError, TypeError) as e:
                self.send({"error": str(e)}, 400)
                return
            token, row = await run_query(lambda: admin.create(
                _db(), actor, body["name"].strip(), lists["providers"], lists["models"],
                body.get("budget_usd"), body.get("period"), expires, team=team, tags=lists["tags"]))
            self.send({**_jsonable(row), "key": token}, 201)
            return
        found = await run_query(lambda: store.find(_db(), ref))
        if found is None:
            self.send({"error": f"no key {ref!r}"}, 404)
        elif action == "revoke":
            done = await run_query(lambda: admin.revoke(_db(), actor, found))
            self.send({"prefix": found["prefix"], "name": found["name"], "revoked": done})
        elif action == "rotate":
            token = await run_query(lambda: admin.rotate(_db(), actor, found))
            self.send({"prefix": found["prefix"], "name": found["name"], "key": token})
        else:
            self.send({"error": "not found"}, 404)


def _list(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{name}: a list of strings")
    return value or None


def _jsonable(row: dict) -> dict:
    out = {k: (f"{v:%Y-%m-%dT%H:%M:%SZ}" if hasattr(v, "strftime") else v) for k, v in row.items()}
    for name in ("providers", "models", "tags"):
        out[name] = json.loads(out[name]) if out.get(name) else None
    return out


class AuditHandler(Base):
    async def get(self) -> None:
        ref = self.get_query_argument("key", None)

        def rows() -> list[dict]:
            key_id = None
            if ref:
                found = store.find(_db(), ref)
                if found is None:
                    raise queries.QueryError(f"no key {ref!r}")
                key_id = found["id"]
            return [{"at": queries.iso(r["at"]), "actor": r["actor"], "action": r["action"],
                     "key": store.PREFIX + r["key_id"], "detail": json.loads(r["detail"]) if r["detail"] else None}
                    for r in store.audit_rows(database_proxy, key_id)]

        self.send(await run_query(rows))


def budgets(unpriced: float, tz: str, thresholds: tuple[float, ...]) -> dict[str, Any]:
    """Every budgeted key with its spend this period, the ones nearest their limit first; fired alerts."""
    near = thresholds[0] if thresholds else 1.0
    # A budget that refused a request fired its 100 % alert (used up) though its spend stops short of it.
    used_up = {(r.budget, r.period_start) for r in BudgetAlert.select(BudgetAlert.budget, BudgetAlert.period_start)
               .where(BudgetAlert.threshold >= 1).execute(database_proxy)}
    out = []
    for key in store.summary(database_proxy, unpriced, tz):
        if not key["budget_usd"] or key["status"] != "active":
            continue
        ratio = key["spent_usd"] / key["budget_usd"]
        over = ratio >= 1 or (f"key:{key['id']}", key["period_start"]) in used_up
        out.append({"budget": f"key:{key['id']}", "prefix": key["prefix"], "name": key["name"],
                    "spent_usd": key["spent_usd"], "limit_usd": key["budget_usd"], "period": key["period"],
                    "ratio": round(ratio, 6), "reset": queries.iso(key["period_end"]),
                    "state": "over" if over else "near" if ratio >= near else "ok"})
    out.sort(key=lambda b: -b["ratio"])
    fired: list[dict[str, Any]] = list(
        BudgetAlert.select().order_by(BudgetAlert.fired_at.desc()).limit(100).dicts().execute(database_proxy))
    alerts = [{**json.loads(r["detail"] or "{}"), "fired_at": queries.iso(r["fired_at"])} for r in fired]
    return {"thresholds": list(thresholds), "budgets": out, "alerts": alerts}


class BudgetsHandler(Base):
    async def get(self) -> None:
        unpriced, tz = _settings()
        try:
            thresholds = parse_thresholds(getattr(ctx.options, "corral_alerts_thresholds", "0.5,0.8,1.0"))
        except Exception:  # OptionsError: configure refused it already; show the defaults' view
            thresholds = (0.5, 0.8, 1.0)
        try:
            self.send(await run_query(budgets, unpriced, tz, thresholds))
        except peewee.OperationalError as e:  # a database from before budget_alerts (read-only viewer)
            self.send({"error": str(e)}, 503)


class SpendHandler(Base):
    async def get(self) -> None:
        filters = self.filters()
        since = filters.since or queries.parse_since("7d")
        assert since is not None
        by = self.get_query_argument("by", "key") or "key"
        self.send(await run_query(spendmod.spend, by, since, filters.until))


ROUTES = [
    (r"/api/keys", KeysHandler),
    (r"/api/keys/audit", AuditHandler),
    (r"/api/keys/([A-Za-z0-9_.:@-]{1,255})/(revoke|rotate)", KeysHandler),
    (r"/api/budgets", BudgetsHandler),
    (r"/api/spend", SpendHandler),
]
