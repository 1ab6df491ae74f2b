"""Admin actions on gateway keys, the same for `corral keys` and the viewer's admin API, each written to
the ``key_audit`` table (who, what, when, which key) in the same transaction as the change.

Who may use the admin API (``POST /api/keys...`` on the viewer, addon/viewer/admin_api.py): a client
presenting ``[keys] admin_token`` as ``Authorization: Bearer`` (audited as ``token:fp_<fingerprint>``),
or, without it, a client on loopback that passes the viewer's own token check (audited as
``loopback``). The CLI is audited as ``<user>@<host> (corral keys)``. A new or rotated key is in the
answer once; the database and the audit keep its prefix only.
"""

from __future__ import annotations

import datetime
import hmac
import os
from typing import Any

import peewee
from mitmproxy import ctx, exceptions

from addon import netaddr
from addon.credentials import fingerprint
from addon.keys import store
from addon.viewer.auth import token_ok


def create(db: peewee.Database, actor: str, name: str, providers: list[str] | None = None,
           models: list[str] | None = None, budget_usd: float | None = None, period: str | None = None,
           expires_at: datetime.datetime | None = None, **more: Any) -> tuple[str, dict]:
    """A new key and its audit row: (the key, its row without hash and salt). ``more``: further settings
    ``store.create`` takes (team, tags)."""
    with db.atomic():
        token, row = store.create(db, name, providers, models, budget_usd, period, expires_at, **more)
        store.audit(db, actor, "create", row["id"], {k: row[k] for k in (
            "name", "team", "tags", "providers", "models", "budget_usd", "period", "expires_at") if k in row})
    return token, row


def revoke(db: peewee.Database, actor: str, row: dict) -> bool:
    """Revoke the key of ``row``; False (and no audit row) when it was revoked already."""
    with db.atomic():
        done = store.revoke(db, row["id"])
        if done:
            store.audit(db, actor, "revoke", row["id"])
    return done


def rotate(db: peewee.Database, actor: str, row: dict) -> str:
    """A new secret for the key of ``row`` (same id, scope, budget and spend): the new key."""
    with db.atomic():
        token = store.rotate(db, row["id"])
        store.audit(db, actor, "rotate", row["id"])
    return token


def check_create(name: object, budget_usd: object, period: object, expires: object) -> None:
    """ValueError for settings `corral keys create` would refuse too."""
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise ValueError("name: a non-empty string of at most 255 characters")
    if budget_usd is not None:
        if isinstance(budget_usd, bool) or not isinstance(budget_usd, int | float) or not 0 <= budget_usd < 1e12:
            raise ValueError("budget_usd: a number >= 0")
        if period not in store.PERIODS:
            raise ValueError(f"a budget needs a period: one of {', '.join(store.PERIODS)}")
    if expires is not None and not isinstance(expires, str):
        raise ValueError("expires: a duration like 30d, 12h, 2w")


class KeyAdmin:
    """``[keys] admin_token``: who may change keys over the viewer's API. A service (no flow hooks)."""

    def __init__(self) -> None:
        self.token = ""

    def load(self, loader) -> None:
        loader.add_option("corral_keys_admin_token", str, "",
                          "Token (\"env:VAR\" or literal) that lets a client off loopback create, revoke and rotate "
                          "gateway keys over the viewer's API (Authorization: Bearer). Empty: loopback only.")

    def configure(self, updated: set[str]) -> None:
        if "corral_keys_admin_token" in updated:
            value = ctx.options.corral_keys_admin_token
            if value.startswith("env:"):
                if not os.environ.get(value[4:]):
                    raise exceptions.OptionsError(f"[keys] admin_token: environment variable {value[4:]} is not set")
                value = os.environ[value[4:]]
            if value and len(value) < 16:
                raise exceptions.OptionsError("[keys] admin_token: at least 16 characters (it grants key creation)")
            self.token = value

    def actor(self, authorization: str | None, query_token: str | None, peer: str | None,
              viewer_token: str) -> str | None:
        """Who the audit records for this caller, or None when it may not change keys."""
        given = authorization[7:].strip() if authorization and authorization.lower().startswith("bearer ") else ""
        if self.token and given and hmac.compare_digest(given.encode(), self.token.encode()):
            return f"token:{fingerprint(self.token)}"
        if peer is not None and netaddr.is_loopback(peer) and token_ok(viewer_token, authorization, query_token):
            return "loopback"
        return None
