"""Gateway keys in the database: how a key is made, hashed and looked up, and what a key has spent.

A key is ``ck-<id>_<secret>``: ``id`` is 8 hex digits (the row's primary key and, as ``ck-<id>``, the
prefix lists and logs show), ``secret`` 32 random bytes (URL-safe base64). The table keeps a random salt
and SHA-256(salt + key); the key is printed once by `corral keys create` and never stored. A random
256-bit secret needs no slow hash: nothing can be guessed, and a check stays far below a millisecond.

Every function here is synchronous (peewee): the gateway calls them on its keys thread (addon/keys/book.py),
the CLI directly. Budget periods are calendar periods of ``[keys] timezone`` (UTC by default).
"""

from __future__ import annotations

import datetime
import fnmatch
import hashlib
import hmac
import json
import re
import secrets
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import peewee

from addon.storage.compiled import CompiledSelect
from addon.storage.models import Flow, GatewayKey, KeyAudit

DB = peewee.Database | peewee.DatabaseProxy  # the CLI and the keys thread pass a database, the viewer its proxy
PREFIX = "ck-"
PERIODS = ("day", "week", "month", "total")
_TOKEN = re.compile(r"^ck-([0-9a-f]{8})_([A-Za-z0-9_-]{20,128})$")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def new_token() -> tuple[str, str]:
    """(key id, the whole key)."""
    key_id = secrets.token_hex(4)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(token: str) -> str | None:
    """The id inside a well-formed key, else None."""
    match = _TOKEN.match(token)
    return match.group(1) if match else None


def key_hash(salt: str, token: str) -> str:
    return hashlib.sha256(salt.encode() + token.encode()).hexdigest()


def parse_duration(text: str) -> datetime.timedelta:
    """``30d``, ``12h``, ``2w``, ``90m``, ``45s``."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 30d, 12h, 2w, 90m")
    return datetime.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def zone(name: str) -> datetime.tzinfo:
    """The time zone budget periods follow (``[keys] timezone``); ValueError for an unknown name.
    UTC needs no time zone database (slim containers and Windows may have none)."""
    if name.upper() == "UTC":
        return datetime.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as UTC or Europe/Berlin)") from None


def period_bounds(period: str, now: datetime.datetime,
                  tz: str = "UTC") -> tuple[datetime.datetime, datetime.datetime | None]:
    """Start and end (None: never), as naive UTC, of the calendar period of time zone ``tz`` that
    contains ``now`` (naive UTC). Weeks start on Monday."""
    if period not in ("day", "week", "month"):
        return datetime.datetime(1970, 1, 1), None
    local_zone = zone(tz)
    local = now.replace(tzinfo=datetime.UTC).astimezone(local_zone).date()
    if period == "day":
        start, end = local, local + datetime.timedelta(days=1)
    elif period == "week":
        start = local - datetime.timedelta(days=local.weekday())
        end = start + datetime.timedelta(days=7)
    else:
        start = local.replace(day=1)
        end = (start + datetime.timedelta(days=32)).replace(day=1)

    def utc(day: datetime.date) -> datetime.datetime:  # local midnight of that day, in UTC
        midnight = datetime.datetime(day.year, day.month, day.day, tzinfo=local_zone)
        return midnight.astimezone(datetime.UTC).replace(tzinfo=None)

    return utc(start), utc(end)


@dataclass(frozen=True)
class KeyRecord:
    """What the gateway needs of a key row to admit a request (no hash, no salt)."""

    id: str
    name: str
    providers: tuple[str, ...] | None
    models: tuple[str, ...] | None
    budget_usd: float | None
    period: str | None
    expires_at: datetime.datetime | None
    revoked_at: datetime.datetime | None
    team: str | None = None
    tags: tuple[str, ...] = ()  # "k=v"

    @property
    def prefix(self) -> str:
        return PREFIX + self.id

    def refusal(self, now: datetime.datetime) -> str | None:
        """Why the key cannot be used now (revoked, expired), else None."""
        if self.revoked_at is not None:
            return f"corral: gateway key {self.prefix} was revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return f"corral: gateway key {self.prefix} expired at {self.expires_at:%Y-%m-%d %H:%M:%S} UTC"
        return None

    def allows_provider(self, provider: str) -> bool:
        return self.providers is None or provider in self.providers

    def allows_model(self, model: str | None) -> bool:
        if self.models is None:
            return True
        # A key limited to some models needs a request that names one: no model, no match.
        return model is not None and any(fnmatch.fnmatchcase(model.lower(), g.lower()) for g in self.models)


def _tuple(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))


_KEY_ROW = CompiledSelect(GatewayKey, lambda key_id: GatewayKey.select().where(GatewayKey.id == key_id), 1)


def key_row(db: DB, key_id: str) -> list[dict]:
    """The key's row (hash and salt included) as a one-item list, or an empty one: on the gateway's timers."""
    return _KEY_ROW.rows(db, key_id)


def record_of(row: dict) -> KeyRecord:
    return KeyRecord(
        id=row["id"], name=row["name"], providers=_tuple(row["providers"]), models=_tuple(row["models"]),
        budget_usd=row["budget_usd"], period=row["period"], expires_at=row["expires_at"],
        revoked_at=row["revoked_at"], team=row.get("team"), tags=_tuple(row.get("tags")) or (),
    )


# --- the table ------------------------------------------------------------------------------------

def create(db: peewee.Database, name: str, providers: list[str] | None = None, models: list[str] | None = None,
           budget_usd: float | None = None, period: str | None = None,
           expires_at: datetime.datetime | None = None, team: str | None = None,
           tags: list[str] | None = None) -> tuple[str, dict]:
    """A new key: (the key, its row without hash and salt). The key is not kept anywhere."""
    if budget_usd is not None and period not in PERIODS:
        raise ValueError(f"a budget needs a period: one of {', '.join(PERIODS)}")
    tags = ["=".join(parse_tag(tag)) for tag in tags or ()]
    salt = secrets.token_hex(16)
    key_id, token = new_token()
    row = {
        "id": key_id, "name": name, "prefix": PREFIX + key_id, "salt": salt, "key_hash": key_hash(salt, token),
        "providers": json.dumps(providers) if providers else None,
        "models": json.dumps(models) if models else None,
        "budget_usd": budget_usd, "period": period if budget_usd is not None else None,
        "created_at": utcnow(), "expires_at": expires_at, "revoked_at": None,
        "team": team or None, "tags": json.dumps(sorted(set(tags))) if tags else None,
    }
    GatewayKey.insert(row).execute(db)
    return token, public(row)


def public(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("salt", "key_hash")}


def rows(db: DB) -> list[dict]:
    return [public(r) for r in GatewayKey.select().order_by(GatewayKey.created_at).dicts().execute(db)]


def find(db: peewee.Database, ref: str) -> dict | None:
    """A key row by id, prefix (``ck-<id>``) or name."""
    ref = ref.strip()
    key_id = ref[len(PREFIX):] if ref.startswith(PREFIX) else ref
    query = GatewayKey.select().where((GatewayKey.id == key_id[:8]) | (GatewayKey.name == ref)).dicts()
    found = list(query.execute(db))
    return public(found[0]) if len(found) == 1 else None


def audit(db: peewee.Database, actor: str, action: str, key_id: str, detail: dict | None = None) -> None:
    KeyAudit.insert(at=utcnow(), actor=actor, action=action, key_id=key_id,
                    detail=json.dumps(detail, default=str) if detail else None).execute(db)


def audit_rows(db: DB, key_id: str | None = None) -> list[dict]:
    query = KeyAudit.select().order_by(KeyAudit.at, KeyAudit._meta.primary_key)
    if key_id is not None:
        query = query.where(KeyAudit.key_id == key_id)
    return list(query.dicts().execute(db))


def status(row: dict, now: datetime.datetime) -> str:
    if row["revoked_at"] is not None:
        return "revoked"
    if row["expires_at"] is not None and now >= row["expires_at"]:
        return "expired"
    return "active"


def summary(db: DB, unpriced_usd: float = 0.01, tz: str = "UTC") -> list[dict]:
    """Every key (no hash, no salt) with its status and its spend in its current period: the viewer's
    ``/api/keys``."""
    now = utcnow()
    out = []
    for row in rows(db):
        start, end = period_bounds(row["period"] or "total", now, tz)
        out.append({**row, "providers": _tuple(row["providers"]), "models": _tuple(row["models"]),
                    "tags": list(_tuple(row.get("tags")) or ()),
                    "status": status(row, now), "spent_usd": round(spent(db, row["id"], start, unpriced_usd), 9),
                    "period_start": start, "period_end": end})
    return out


def revoke(db: peewee.Database, key_id: str) -> bool:
    query = GatewayKey.update(revoked_at=utcnow()).where(GatewayKey.id == key_id, GatewayKey.revoked_at.is_null())
    return bool(query.execute(db))


def rotate(db: peewee.Database, key_id: str) -> str:
    """A new secret for the same key: the old key stops working, scope, budget and spend stay (same id)."""
    salt = secrets.token_hex(16)
    token = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    GatewayKey.update(salt=salt, key_hash=key_hash(salt, token)).where(GatewayKey.id == key_id).execute(db)
    return token


def verify(db: peewee.Database, token: str) -> KeyRecord | None:
    """The key's record if ``token`` is a key this database issued (revoked and expired ones too), else None."""
    key_id = key_id_of(token)
    if key_id is None:
        return None
    found = key_row(db, key_id)
    if not found or not hmac.compare_digest(key_hash(found[0]["salt"], token), found[0]["key_hash"]):
        return None
    return record_of(found[0])


def charge_sql(unpriced_usd: float, unpriced_per_1k: float | None) -> peewee.Node:
    """What one recorded flow counts towards a budget, in SQL (``charge`` is the same rule in Python)."""
    tokens = peewee.fn.COALESCE(Flow.input_tokens, 0) + peewee.fn.COALESCE(Flow.output_tokens, 0)
    fallback = tokens * unpriced_per_1k / 1000.0 if unpriced_per_1k is not None else unpriced_usd
    no_usage = Flow.input_tokens.is_null() & Flow.output_tokens.is_null()
    answered = (Flow.status >= 200) & (Flow.status < 300) & (Flow.cache != "hit")
    return peewee.Case(None, [
        (Flow.cost_usd.is_null(False), Flow.cost_usd),
        (Flow.unpriced == True, fallback),  # noqa: E712
        (no_usage & answered, unpriced_usd),
    ], 0.0)


def charge(cost_usd: float | None, unpriced: bool, tokens: int | None, answered: bool,
           unpriced_usd: float, unpriced_per_1k: float | None) -> float:
    """What a flow counts towards its budgets: its exact cost; an unpriced flow (tokens counted, no price)
    ``tokens / 1000 * unpriced_per_1k`` or else ``unpriced_usd``; a successful answer from the provider whose
    usage could not be read ``unpriced_usd``; anything else (refusals, errors, cache hits) nothing."""
    if cost_usd is not None:
        return cost_usd
    if unpriced:
        return (tokens or 0) * unpriced_per_1k / 1000.0 if unpriced_per_1k is not None else unpriced_usd
    return unpriced_usd if answered and tokens is None else 0.0


def spent(db: DB, key_ids: str | list[str], since: datetime.datetime, unpriced_usd: float,
          unpriced_per_1k: float | None = None) -> float:
    """USD the flows of these keys count since ``since`` (``charge_sql``): never nothing for a flow
    whose price or usage is unknown."""
    ids = [key_ids] if isinstance(key_ids, str) else key_ids
    if not ids:
        return 0.0
    shape = (len(ids), unpriced_per_1k is None)
    compiled = _SPENT.get(shape)
    if compiled is None:  # one per number of keys: budgets re-read their sum on a timer
        if len(_SPENT) > 64:
            _SPENT.clear()
        compiled = _SPENT[shape] = CompiledSelect(Flow, _spent_query(len(ids), unpriced_per_1k is None),
                                                  len(ids) + (2 if unpriced_per_1k is None else 3))
    per_1k = () if unpriced_per_1k is None else (unpriced_per_1k,)
    return float(compiled.scalar(db, *ids, since, unpriced_usd, *per_1k) or 0.0)


_SPENT: dict[tuple[int, bool], CompiledSelect] = {}


def _spent_query(count: int, flat: bool) -> Callable[..., peewee.Query]:
    def build(*args: Any) -> peewee.Query:
        ids, since, unpriced_usd = list(args[:count]), args[count], args[count + 1]
        per_1k = None if flat else args[count + 2]
        return Flow.select(peewee.fn.SUM(charge_sql(unpriced_usd, per_1k))).where(
            Flow.gateway_key.in_(ids), Flow.started_at >= since)
    return build


def key_ids(db: DB, kind: str, name: str) -> list[str]:
    """Ids of the keys a budget covers: ``key`` (that id), ``team`` (keys of the team), ``tag`` (keys
    carrying ``k=v``)."""
    if kind == "key":
        return [name]
    if kind == "team":
        return [r[0] for r in GatewayKey.select(GatewayKey.id).where(GatewayKey.team == name).tuples().execute(db)]
    query = GatewayKey.select(GatewayKey.id, GatewayKey.tags).where(GatewayKey.tags.is_null(False)).tuples()
    return [key_id for key_id, tags in query.execute(db) if name in json.loads(tags)]


def parse_tag(text: str) -> tuple[str, str]:
    """``k=v`` -> (k, v); ValueError otherwise."""
    k, sep, v = text.partition("=")
    if not sep or not k.strip() or not v.strip():
        raise ValueError(f"a tag is KEY=VALUE, got {text!r}")
    return k.strip(), v.strip()


def recorded_ids(db: peewee.Database, flow_ids: list[str]) -> set[str]:
    """Which of these flows have their row in the database already."""
    if not flow_ids:
        return set()
    return {r[0] for r in Flow.select(Flow.id).where(Flow.id.in_(flow_ids)).tuples().execute(db)}
