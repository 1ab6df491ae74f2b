"""CompiledSelect: the SQL generated once per database gives exactly what peewee's own ``.dicts()`` gives,
on SQLite and PostgreSQL, for found, missing and converted (datetime, NULL) values."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import peewee
import pytest

from addon.keys import store
from addon.storage import db as dbmod
from addon.storage.compiled import CompiledSelect
from addon.storage.models import Flow, GatewayKey
from tests.support import pgdb


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path) -> Iterator[peewee.Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'corral.db'}"
    else:
        pgdb.require()
        url = pgdb.create_database()
    db = dbmod.connect(url)
    yield db
    db.close()
    if request.param == "postgres":
        pgdb.drop_database(url)


def peewee_rows(db: peewee.Database, key_id: str) -> list[dict]:
    return list(GatewayKey.select().where(GatewayKey.id == key_id).dicts().execute(db))


def test_rows_equal_peeweess_dicts(database: peewee.Database) -> None:
    _, plain = store.create(database, "plain")
    expires = datetime.datetime(2031, 1, 2, 3, 4, 5)
    _, full = store.create(database, "full", providers=["openai"], models=["gpt-*"], budget_usd=2.5, period="day",
                           expires_at=expires, team="ml", tags=["env=prod"])
    store.revoke(database, full["id"])
    for key_id in (plain["id"], full["id"], "00000000"):
        assert store.key_row(database, key_id) == peewee_rows(database, key_id)
    row = store.key_row(database, full["id"])[0]
    assert row["expires_at"] == expires and isinstance(row["revoked_at"], datetime.datetime)
    assert row["budget_usd"] == 2.5 and row["team"] == "ml"
    assert store.key_row(database, plain["id"])[0]["expires_at"] is None
    assert store.key_row(database, "00000000") == []
    proxy = peewee.DatabaseProxy()  # what the viewer and the CLI hand over
    proxy.initialize(database)
    assert store.key_row(proxy, full["id"]) == peewee_rows(database, full["id"])


def test_an_argument_peewee_would_change_is_refused(database: peewee.Database) -> None:
    containing = CompiledSelect(Flow, lambda part: Flow.select().where(Flow.path.contains(part)), 1)
    with pytest.raises(ValueError, match="unchanged"):
        containing.rows(database, "chat")  # the parameter is "%<marker>%", not the marker


def test_budget_sums_equal_peewees_own_query(database: peewee.Database) -> None:
    day = datetime.datetime(2026, 12, 3)
    rows = [("a", "k1", day - datetime.timedelta(seconds=1), 1.0, None, None),  # before the period
            ("b", "k1", day, 0.25, None, None), ("c", "k2", day + datetime.timedelta(hours=1), None, 100, 900),
            ("d", "k3", day + datetime.timedelta(hours=2), 7.0, None, None)]  # another key
    for flow_id, key, at, cost, tokens_in, tokens_out in rows:
        Flow.insert(id=flow_id, started_at=at, mode="reverse", method="POST", path="/", gateway_key=key, status=200,
                    cost_usd=cost, input_tokens=tokens_in, output_tokens=tokens_out,
                    unpriced=cost is None).execute(database)

    def peewees(ids: list[str], per_1k: float | None) -> float:
        query = Flow.select(peewee.fn.SUM(store.charge_sql(0.5, per_1k))).where(
            Flow.gateway_key.in_(ids), Flow.started_at >= day)
        return float(query.scalar(database) or 0.0)

    for ids in (["k1"], ["k1", "k2"], ["k2", "k1", "k3"], ["nobody"]):
        for per_1k in (None, 0.002):
            assert store.spent(database, ids, day, 0.5, per_1k) == pytest.approx(peewees(ids, per_1k)), (ids, per_1k)
    assert store.spent(database, ["k1", "k2"], day, 0.5, 0.002) == pytest.approx(0.25 + 1000 * 0.002 / 1000)
