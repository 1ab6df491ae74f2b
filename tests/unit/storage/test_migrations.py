"""Schema versions and migrations (addon/storage/migrations.py), on SQLite and on PostgreSQL.

Upgrading Corral must never lose a recorded row: an old database is brought to the latest schema
at connect, under a lock, each migration in the transaction of its stamp.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from collections.abc import Iterator

import peewee
import pytest
from playhouse import db_url, migrate as pw_migrate

from addon.storage import db as dbmod, migrations
from addon.storage.migrations import MIGRATIONS, Migration
from tests.support import pgdb
from tests.support.gateway import REPO_ROOT

LATEST = MIGRATIONS[-1].version
COST = 0.000768123456789  # needs 8-byte floats: PostgreSQL REAL would round it


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'corral.db'}"
        return
    pgdb.require()
    url = pgdb.create_database()
    yield url
    pgdb.drop_database(url)


def baseline_row(i: int) -> dict:
    return {"id": f"flow-{i}", "started_at": datetime.datetime(2026, 1, 1, 12, 0, i), "mode": "reverse",
            "provider": "openai", "method": "POST", "path": "/v1/chat/completions", "model": "gpt-4o",
            "status": 200, "stream": bool(i % 2), "input_tokens": 100 + i, "output_tokens": i,
            "cost_usd": COST, "unpriced": False, "cache": "off", "retries": 0, "complete": True}


def make_baseline(url: str, stamp: bool) -> None:
    """A database as Corral 0.1 left it: the v1 flows table with rows (stamped v1, or from before versions)."""
    if url.startswith("sqlite:///"):
        dbmod._prepare_sqlite_file(dbmod.sqlite_path(url))
    db = db_url.connect(url)  # as Corral 0.1 opened it: on PostgreSQL its floats were REAL
    with db.connection_context():
        if stamp:
            with db.bind_ctx([migrations.SchemaVersion]):
                db.create_tables([migrations.SchemaVersion])
            assert migrations.upgrade(db, 0, MIGRATIONS[:1]) == [1]
        else:
            migrations._baseline(None, db)
        with db.bind_ctx([migrations._FlowV1]):
            migrations._FlowV1.insert_many([baseline_row(i) for i in range(5)]).execute()
    db.close()


def columns(db: peewee.Database) -> dict[str, dict[str, str]]:
    return {t: {c.name: c.data_type.lower() for c in db.get_columns(t)} for t in db.get_tables()}


def flows(db: peewee.Database) -> list[tuple]:
    cur = db.execute_sql("SELECT id, started_at, stream, input_tokens, cost_usd FROM flows ORDER BY id")
    return [tuple(r) for r in cur.fetchall()]


def test_new_database_is_created_and_stamped_latest(url: str) -> None:
    db = dbmod.connect(url)
    assert migrations.current_version(db) == LATEST
    assert migrations.apply(db) == []  # connecting again changes nothing
    assert "worker" in {c.name for c in db.get_columns("flows")}
    db.close()


def test_older_database_upgrades_without_losing_rows(url: str) -> None:
    make_baseline(url, stamp=True)

    def add_note(migrator: pw_migrate.SchemaMigrator, db: peewee.Database) -> None:
        migrations.add_missing_columns(migrator, db, "flows", note=peewee.TextField(default="none"))

    test_only = Migration(LATEST + 1, "test: flows.note", add_note)
    db = dbmod.open_url(url)
    ran = migrations.apply(db, [*MIGRATIONS, test_only])
    assert ran == [m.version for m in MIGRATIONS[1:]] + [LATEST + 1]
    with db.connection_context():
        assert migrations.current_version(db) == LATEST + 1
        rows = flows(db)
        assert [r[0] for r in rows] == [f"flow-{i}" for i in range(5)]
        assert [r[3] for r in rows] == [100 + i for i in range(5)]
        assert all(r[4] == pytest.approx(COST, rel=1e-6) for r in rows)  # REAL kept ~7 digits
        float_types = {t for n, t in columns(db)["flows"].items() if n in ("cost_usd", "ttfb_ms", "wait_ms")}
        assert float_types == ({"real"} if url.startswith("sqlite") else {"double precision"})
        assert [bool(r[2]) for r in rows] == [bool(i % 2) for i in range(5)]
        notes = db.execute_sql("SELECT note, worker FROM flows").fetchall()
        assert [tuple(n) for n in notes] == [("none", None)] * 5
    db.close()


def test_database_from_before_schema_versions_is_taken_as_the_baseline(url: str) -> None:
    make_baseline(url, stamp=False)
    db = dbmod.connect(url)
    assert migrations.current_version(db) == LATEST
    assert len(flows(db)) == 5 and all(r[4] == pytest.approx(COST, rel=1e-6) for r in flows(db))
    db.close()


def test_upgraded_schema_equals_a_fresh_one(url: str, tmp_path) -> None:
    """Fails when a column was added to models.py without its migration (or the other way round)."""
    make_baseline(url, stamp=True)
    upgraded = dbmod.connect(url)
    got = columns(upgraded)
    upgraded.close()
    if url.startswith("sqlite"):
        fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        fresh_url = pgdb.create_database()
    fresh = dbmod.connect(fresh_url)
    assert got == columns(fresh)
    fresh.close()
    if not url.startswith("sqlite"):
        pgdb.drop_database(fresh_url)


def test_a_failing_migration_changes_nothing(url: str) -> None:
    make_baseline(url, stamp=True)

    def half_done(migrator: pw_migrate.SchemaMigrator, db: peewee.Database) -> None:
        migrations.add_missing_columns(migrator, db, "flows", half=peewee.IntegerField(null=True))
        raise RuntimeError("migration bug")

    db = dbmod.open_url(url)
    with pytest.raises(RuntimeError, match="migration bug"):
        migrations.apply(db, [*MIGRATIONS, Migration(LATEST + 1, "test: broken", half_done)])
    with db.connection_context():
        assert migrations.current_version(db) == 1
        names = {c.name for c in db.get_columns("flows")}
        assert "half" not in names and "worker" not in names
        assert len(flows(db)) == 5
    db.close()


def test_costs_keep_full_precision(url: str) -> None:
    from addon.storage.models import Flow

    dbmod.connect(url)
    row = {k: v for k, v in baseline_row(1).items()}
    Flow.insert(row).execute()
    assert Flow.get_by_id("flow-1").cost_usd == COST
    assert Flow.get_by_id("flow-1").stream is True


def test_a_database_newer_than_this_corral_is_refused(url: str) -> None:
    db = dbmod.connect(url)
    with db.connection_context(), db.bind_ctx([migrations.SchemaVersion]):
        migrations.SchemaVersion.insert(version=LATEST + 7, name="from the future",
                                        applied_at=datetime.datetime(2030, 1, 1)).execute()
    db.close()
    with pytest.raises(dbmod.DatabaseError, match="newer than this Corral"):
        dbmod.connect(url)


def test_processes_connecting_at_once_migrate_once(url: str) -> None:
    """`--workers N` starts N processes that all run apply() on the same new database."""
    code = f"from addon.storage import db; db.connect({url!r}).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stderr=subprocess.PIPE) for _ in range(4)]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    db = dbmod.open_url(url)
    with db.connection_context():
        stamps = db.execute_sql("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [s[0] for s in stamps] == [m.version for m in MIGRATIONS]
    db.close()
