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
