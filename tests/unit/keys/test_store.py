"""Gateway keys in the database: hashing, verification, scope, periods and spend (addon/keys/store.py)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator

import peewee
import pytest

from addon.keys import store
from addon.storage import db as dbmod
from addon.storage.models import Flow

D = datetime.datetime


@pytest.fixture
def db(tmp_path) -> Iterator[peewee.Database]:
    database = dbmod.connect(f"sqlite:///{tmp_path / 'corral.db'}")
    yield database
    database.close()


def flow(db: peewee.Database, flow_id: str, key: str | None, at: D, cost: float | None, unpriced: bool = False) -> None:
    Flow.insert(id=flow_id, started_at=at, mode="reverse", method="POST", path="/", gateway_key=key,
                cost_usd=cost, unpriced=unpriced).execute(db)


@pytest.mark.parametrize(("period", "now", "start", "end"), [
    ("day", D(2026, 12, 31, 23, 59), D(2026, 12, 31), D(2027, 1, 1)),
    ("week", D(2026, 12, 3, 7, 0), D(2026, 11, 30), D(2026, 12, 7)),  # a Thursday; weeks start on Monday
    ("month", D(2026, 12, 3), D(2026, 12, 1), D(2027, 1, 1)),
    ("month", D(2026, 2, 28, 12), D(2026, 2, 1), D(2026, 3, 1)),
    ("total", D(2026, 12, 3), D(1970, 1, 1), None),
])
def test_period_bounds_are_utc_calendar_periods(period: str, now: D, start: D, end: D | None) -> None:
    assert store.period_bounds(period, now) == (start, end)


@pytest.mark.parametrize(("period", "now", "start", "end"), [
    # Berlin is UTC+1 in winter: its day starts at 23:00 UTC the evening before.
    ("day", D(2026, 12, 3, 23, 30), D(2026, 12, 3, 23), D(2026, 12, 4, 23)),
    ("day", D(2026, 12, 3, 22, 59), D(2026, 12, 2, 23), D(2026, 12, 3, 23)),
    # The month of March 2026 in Berlin: winter time at its start, summer time (UTC+2) at its end.
    ("month", D(2026, 3, 15), D(2026, 2, 28, 23), D(2026, 3, 31, 22)),
])
def test_periods_follow_the_configured_time_zone(period: str, now: D, start: D, end: D) -> None:
    assert store.period_bounds(period, now, "Europe/Berlin") == (start, end)


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        store.period_bounds("day", D(2026, 12, 3), "Mars/Olympus")


def test_only_a_salted_hash_is_stored_and_the_key_verifies(db: peewee.Database) -> None:
    token, row = store.create(db, "app", providers=["openai"], models=["gpt-4o*"])
    raw = db.execute_sql("SELECT * FROM gateway_keys").fetchall()
    assert token not in repr(raw) and token.split("_", 1)[1] not in repr(raw)
    assert row["prefix"] == token[:11] and "key_hash" not in row and "salt" not in row
    record = store.verify(db, token)
    assert record is not None and record.name == "app" and record.providers == ("openai",)
    assert store.verify(db, token[:-1] + ("A" if token[-1] != "A" else "B")) is None  # same id, other secret
    assert store.verify(db, "ck-00000000_" + "x" * 43) is None
    assert store.verify(db, "sk-not-a-gateway-key") is None


def test_two_keys_never_share_a_salt(db: peewee.Database) -> None:
    store.create(db, "a")
    store.create(db, "b")
    salts = {r[0] for r in db.execute_sql("SELECT salt FROM gateway_keys").fetchall()}
    assert len(salts) == 2


def test_revoked_and_expired_keys_are_refused(db: peewee.Database) -> None:
    now = store.utcnow()
    token, row = store.create(db, "short", expires_at=now + datetime.timedelta(hours=1))
    record = store.verify(db, token)
    assert record is not None and record.refusal(now) is None
    assert "expired" in (record.refusal(now + datetime.timedelta(hours=2)) or "")
    assert store.revoke(db, row["id"]) and not store.revoke(db, row["id"])
    revoked = store.verify(db, token)
    assert revoked is not None and "revoked" in (revoked.refusal(now) or "")


def test_rotation_keeps_the_id_and_retires_the_old_secret(db: peewee.Database) -> None:
    old, row = store.create(db, "app", budget_usd=1.0, period="day")
    new = store.rotate(db, row["id"])
    assert new != old and new[:11] == old[:11]
    assert store.verify(db, old) is None
    record = store.verify(db, new)
    assert record is not None and record.id == row["id"] and record.budget_usd == 1.0


def test_model_globs_ignore_case_and_need_a_model() -> None:
    record = store.KeyRecord("abcd1234", "x", None, ("gpt-4o*",), None, None, None, None)
    assert record.allows_model("gpt-4o-mini") and record.allows_model("GPT-4o")
    assert not record.allows_model("o3-mini") and not record.allows_model(None)
    assert store.KeyRecord("abcd1234", "x", None, None, None, None, None, None).allows_model(None)


def test_spend_is_the_exact_cost_of_the_keys_flows_in_the_period(db: peewee.Database) -> None:
    day = D(2026, 12, 3)
    flow(db, "f1", "k1", day + datetime.timedelta(hours=1), 0.25)
    flow(db, "f2", "k1", day + datetime.timedelta(hours=2), None, unpriced=True)  # counts the fallback
    flow(db, "f3", "k1", day + datetime.timedelta(hours=3), None)  # an error: no usage, no cost
    flow(db, "f4", "k1", day - datetime.timedelta(minutes=1), 5.0)  # the day before
    flow(db, "f5", "k2", day + datetime.timedelta(hours=1), 7.0)  # another key
    assert store.spent(db, "k1", day, unpriced_usd=0.5) == pytest.approx(0.75)
    assert store.spent(db, "k1", D(1970, 1, 1), unpriced_usd=0.0) == pytest.approx(5.25)
    assert store.recorded_ids(db, ["f1", "nope"]) == {"f1"}


def test_durations() -> None:
    assert store.parse_duration("30d") == datetime.timedelta(days=30)
    assert store.parse_duration("12h") == datetime.timedelta(hours=12)
    for bad in ("0d", "30", "d", "-1d", "1y"):
        with pytest.raises(ValueError):
            store.parse_duration(bad)


def test_admin_actions_are_audited_without_the_key(tmp_path) -> None:
    from tests.support.cli import corral

    url = f"sqlite:///{tmp_path / 'corral.db'}"
    created = corral("keys", "create", "--name", "audited", "--budget-usd", "2", "--period", "month",
                     "--db", url, "--config", "-", "--json")
    key = json.loads(created.stdout)["key"]
    assert corral("keys", "rotate", "audited", "--db", url, "--config", "-").returncode == 0
    assert corral("keys", "revoke", "audited", "--db", url, "--config", "-").returncode == 0
    database = dbmod.connect(url)
    rows = store.audit_rows(database, key[3:11])
    assert [r["action"] for r in rows] == ["create", "rotate", "revoke"]
    assert all("(corral keys)" in r["actor"] for r in rows) and '"budget_usd": 2.0' in rows[0]["detail"]
    assert key.split("_", 1)[1] not in repr(database.execute_sql("SELECT * FROM key_audit").fetchall())
    database.close()


def test_team_and_tag_spend_sums_their_keys_with_the_unpriced_rule(db: peewee.Database) -> None:
    _, a = store.create(db, "a", team="ml", tags=["env = prod"])
    _, b = store.create(db, "b", team="ml")
    _, c = store.create(db, "c", tags=["env=prod", "app=x"])
    assert sorted(store.key_ids(db, "team", "ml")) == sorted([a["id"], b["id"]])
    assert sorted(store.key_ids(db, "tag", "env=prod")) == sorted([a["id"], c["id"]])
    day = D(2026, 12, 3, 1)
    flow(db, "f1", a["id"], day, 0.25)
    Flow.insert(id="f2", started_at=day, mode="reverse", method="POST", path="/", gateway_key=b["id"],
                unpriced=True, input_tokens=1500, output_tokens=500, status=200).execute(db)
    Flow.insert(id="f3", started_at=day, mode="reverse", method="POST", path="/", gateway_key=c["id"],
                status=200).execute(db)  # a success whose usage could not be read
    team = store.key_ids(db, "team", "ml")
    assert store.spent(db, team, D(2026, 12, 3), 0.01) == pytest.approx(0.26)
    assert store.spent(db, team, D(2026, 12, 3), 0.01, unpriced_per_1k=0.002) == pytest.approx(0.254)
    assert store.spent(db, store.key_ids(db, "tag", "env=prod"), D(2026, 12, 3), 0.01) == pytest.approx(0.26)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        store.create(db, "d", tags=["prod"])
