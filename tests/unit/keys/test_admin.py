"""KeyAdmin: who may change keys over the viewer's API, and the audit each admin action writes."""

from __future__ import annotations

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from addon.credentials import fingerprint
from addon.keys import admin, store
from addon.storage import db as dbmod

TOKEN = "admin-token-0123456789"


def configured(value: str) -> admin.KeyAdmin:
    keys_admin = admin.KeyAdmin()
    with taddons.context(keys_admin) as tctx:
        tctx.configure(keys_admin, corral_keys_admin_token=value)
    return keys_admin


def test_actor_is_the_token_fingerprint_or_loopback_else_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_TEST_ADMIN", TOKEN)
    keys_admin = configured("env:CORRAL_TEST_ADMIN")
    assert keys_admin.actor(f"Bearer {TOKEN}", None, "203.0.113.9", "") == f"token:{fingerprint(TOKEN)}"
    assert keys_admin.actor("Bearer wrong-token-0123456789", None, "203.0.113.9", "") is None
    assert keys_admin.actor(None, None, "203.0.113.9", "") is None
    assert keys_admin.actor(None, None, "127.0.0.1", "") == "loopback"
    assert keys_admin.actor(None, None, "::ffff:127.0.0.1", "") == "loopback"
    # A viewer with a token: loopback clients need it too.
    assert keys_admin.actor(None, None, "127.0.0.1", "viewer-token") is None
    assert keys_admin.actor("Bearer viewer-token", None, "127.0.0.1", "viewer-token") == "loopback"


def test_no_admin_token_means_loopback_only() -> None:
    keys_admin = configured("")
    assert keys_admin.actor("Bearer ", None, "10.0.0.1", "") is None
    assert keys_admin.actor("Bearer anything", None, "10.0.0.1", "") is None


def test_admin_token_must_be_set_and_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_TEST_ADMIN", raising=False)
    with pytest.raises(exceptions.OptionsError, match="CORRAL_TEST_ADMIN is not set"):
        configured("env:CORRAL_TEST_ADMIN")
    with pytest.raises(exceptions.OptionsError, match="at least 16"):
        configured("short")


def test_each_action_is_audited_with_its_actor(tmp_path) -> None:
    db = dbmod.connect(f"sqlite:///{tmp_path / 'corral.db'}")
    token, row = admin.create(db, "loopback", "app", budget_usd=2.0, period="week")
    new = admin.rotate(db, "token:fp_x", row)
    assert admin.revoke(db, "cli", row) and not admin.revoke(db, "cli", row)
    audit = store.audit_rows(db, row["id"])
    assert [(a["action"], a["actor"]) for a in audit] == [("create", "loopback"), ("rotate", "token:fp_x"),
                                                          ("revoke", "cli")]
    assert all(token not in str(a) and new not in str(a) for a in audit)


@pytest.mark.parametrize(("args", "message"), [
    (("", None, None, None), "name"), (("a", -1, "day", None), "budget_usd"), (("a", True, "day", None), "budget_usd"),
    (("a", 1, None, None), "period"), (("a", 1, "year", None), "period"), (("a", None, None, 30), "expires"),
])
def test_create_settings_are_checked(args, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        admin.check_create(*args)
