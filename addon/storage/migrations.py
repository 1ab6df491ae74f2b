"""Schema versions: upgrading Corral never loses recorded data, on SQLite and PostgreSQL alike.

The database carries a ``schema_version`` table (one row per applied migration). At every connect,
``apply()`` runs under a lock that serialises concurrent gateway processes (``--workers``):

- empty database: create every table of ``ALL_MODELS`` and stamp the latest version;
- database from before schema versions (``flows`` exists, no ``schema_version``): it is at the
  baseline, version 1;
- otherwise: run the migrations newer than the stamped version, in order, each in the same
  transaction as its stamp (PostgreSQL and SQLite both have transactional DDL), so a failed upgrade
  leaves the database exactly as it was;
- finally ``create_tables(ALL_MODELS, safe=True)``: a model that is a new *table* needs no
  migration, it is simply created where missing.

A database stamped with a version newer than this Corral knows is refused (an older Corral
would write rows the newer schema may not expect).

How to add a migration (a new column, index or type change on an existing table):
  1. change the model in models.py (fresh databases get it from there);
  2. append ``Migration(<last + 1>, "what it does", fn)`` to ``MIGRATIONS`` below, where
     ``fn(migrator, db)`` makes the same change to an existing database with ``playhouse.migrate``
     operations, e.g. ``migrate(migrator.add_column("flows", "note", peewee.TextField(null=True)))``.
     Use ``add_missing_columns`` for new columns: it skips columns that already exist, so the
     migration is also safe on a table that ``create_tables`` just made from the current model.
     A new NOT NULL column needs a default (existing rows get it);
  3. tests/unit/storage/test_migrations.py checks that a database upgraded from the baseline has exactly the
     columns of a fresh one: it fails when step 2 was forgotten.
Never edit or renumber a released migration; never rename a column (readers use the names).
"""

from __future__ import annotations

import datetime
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import peewee
from playhouse import migrate as pw_migrate

from addon.storage.models import ALL_MODELS

VERSION_TABLE = "schema_version"
# Any stable 64-bit number: the PostgreSQL advisory lock every Corral process takes to migrate.
_PG_LOCK_KEY = zlib.crc32(b"corral-schema-migrations")


class SchemaError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up: Callable[[pw_migrate.SchemaMigrator, peewee.Database], None]


class SchemaVersion(peewee.Model):
    version = peewee.IntegerField(primary_key=True)
    name = peewee.TextField()
    applied_at = peewee.DateTimeField()

    class Meta:
        table_name = VERSION_TABLE


# --- helpers for migrations --------------------------------------------------------------------

def add_missing_columns(migrator: pw_migrate.SchemaMigrator, db: peewee.Database, table: str,
                        **fields: peewee.Field) -> None:
    """Add each column unless the table already has it (idempotent ``add_column``)."""
    existing = {c.name for c in db.get_columns(table)}
    ops = [migrator.add_column(table, name, field) for name, field in fields.items() if name not in existing]
    if ops:
        pw_migrate.migrate(*ops)


# --- the migrations ----------------------------------------------------------------------------

class _FlowV1(peewee.Model):
    """The flows table as Corral 0.1 created it: frozen here, whatever models.py says later."""

    id = peewee.CharField(primary_key=True, max_length=64)
    started_at = peewee.DateTimeField(index=True)
    mode = peewee.CharField(max_length=16)
    provider = peewee.CharField(max_length=64, null=True)
    method = peewee.CharField(max_length=16)
    host = peewee.CharField(max_length=255, null=True)
    path = peewee.TextField()
    model = peewee.CharField(max_length=255, null=True)
    status = peewee.IntegerField(null=True)
    stream = peewee.BooleanField(default=False)
    ttfb_ms = peewee.FloatField(null=True)
    duration_ms = peewee.FloatField(null=True)
    input_tokens = peewee.IntegerField(null=True)
    output_tokens = peewee.IntegerField(null=True)
    cached_input_tokens = peewee.IntegerField(null=True)
    cache_creation_input_tokens = peewee.IntegerField(null=True)
    reasoning_tokens = peewee.IntegerField(null=True)
    total_tokens = peewee.IntegerField(null=True)
    cost_usd = peewee.FloatField(null=True)
    unpriced = peewee.BooleanField(default=False)
    saved_cost_usd = peewee.FloatField(null=True)
    cache = peewee.CharField(max_length=16, default="off")
    retries = peewee.IntegerField(default=0)
    wait_ms = peewee.FloatField(null=True)
    upstream = peewee.TextField(null=True)
    complete = peewee.BooleanField(default=False)
    error = peewee.TextField(null=True)
    parse_error = peewee.TextField(null=True)
    credential = peewee.CharField(max_length=32, null=True)
    client = peewee.CharField(max_length=64, null=True)
    request_headers = peewee.TextField(null=True)
    response_headers = peewee.TextField(null=True)
    request_body = peewee.TextField(null=True)
    response_body = peewee.TextField(null=True)
    response_text = peewee.TextField(null=True)
    attempts = peewee.TextField(null=True)

    class Meta:
        table_name = "flows"
        legacy_table_names = False
        indexes = (
            (("provider", "started_at"), False),
            (("model", "started_at"), False),
            (("status", "started_at"), False),
            (("cache", "started_at"), False),
        )


def _baseline(migrator: pw_migrate.SchemaMigrator, db: peewee.Database) -> None:
    with db.bind_ctx([_FlowV1]):
        db.create_tables([_FlowV1], safe=True)


def _pg_double_precision(migrator: pw_migrate.SchemaMigrator, db: peewee.Database) -> None:
    """PostgreSQL: peewee's FloatField was REAL (4 bytes, ~7 digits): costs lost precision. Corral now
    maps it to DOUBLE PRECISION (db.py); convert columns made before. SQLite's REAL is 8 bytes already."""
    if not isinstance(db, peewee.PostgresqlDatabase):
        return
    for model in ALL_MODELS:
        table = model._meta.table_name
        if not db.table_exists(table):
            continue
        for field in model._meta.sorted_fields:
            if isinstance(field, peewee.FloatField) and not isinstance(field, peewee.DoubleField):
                db.execute_sql(f'ALTER TABLE "{table}" ALTER COLUMN "{field.column_name}" TYPE DOUBLE PRECISION')


def _flows_worker(migrator: pw_migrate.SchemaMigrator, db: peewee.Database) -> None:
    add_missing_columns(migrator, db, "flows", worker=peewee.IntegerField(null=True))


def _flows_fidelity(migrator: pw_migrate.SchemaMigrator, db: peewee.Database) -> None:
    add_missing_columns(
        migrator, db, "flows",
        corral_changes=peewee.TextField(null=True),
        response_type=peewee.CharField(max_length=255, null=True),
        response_bytes=peewee.IntegerField(null=True),
    )


def _flows_gateway_path(migrator: pw_migrate.SchemaMigrator, db: peewee.Database) -> None:
    add_missing_columns(migrator, db, "flows", gateway_path=peewee.TextField(null=True))


def _flows_gateway_key(migrator: pw_migrate.SchemaMigrator, db: peewee.Database) -> None:
    add_missing_columns(migrator, db, "flows", gateway_key=peewee.CharField(max_length=32, null=True))


def _keys_team_tags(migrator: pw_migrate.SchemaMigrator, db: peewee.Database) -> None:
    if db.table_exists("gateway_keys"):  # a database from before keys gets the table from the model
        add_missing_columns(migrator, db, "gateway_keys", team=peewee.CharField(max_length=255, null=True),
                            tags=peewee.TextField(null=True))


def _flows_unified(migrator: pw_migrate.SchemaMigrator, db: peewee.Database) -> None:
    add_missing_columns(migrator, db, "flows", requested_model=peewee.CharField(max_length=255, null=True),
                        model_alias=peewee.CharField(max_length=255, null=True))


MIGRATIONS: list[Migration] = [
    Migration(1, "baseline: the flows table of Corral 0.1", _baseline),
    Migration(2, "PostgreSQL: float columns are DOUBLE PRECISION", _pg_double_precision),
    Migration(3, "flows.worker: which gateway process (corral start --workers) recorded the row", _flows_worker),
    Migration(4, "flows.corral_changes, response_type, response_bytes: what Corral changed; the body's type and size",
              _flows_fidelity),
    Migration(5, "flows.gateway_path: the request's path through Corral's reverse mode (viewer: copy as curl)",
              _flows_gateway_path),
    Migration(6, "flows.gateway_key: id of the gateway key a request presented (corral keys)", _flows_gateway_key),
    Migration(7, "gateway_keys.team, tags: what team and tag budgets ([budgets]) a key counts towards",
              _keys_team_tags),
    Migration(8, "flows.requested_model, model_alias: the model a unified request named, and its model group",
              _flows_unified),
]


# --- applying them -----------------------------------------------------------------------------

@contextmanager
def _locked_transaction(db: peewee.Database) -> Iterator[None]:
    """One transaction that only one Corral process at a time can be in."""
    if isinstance(db, peewee.SqliteDatabase):
        with db.atomic("IMMEDIATE"):  # takes SQLite's write lock up front (waits busy_timeout)
            yield
    else:
        with db.atomic():
            if isinstance(db, peewee.PostgresqlDatabase):
                db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
            yield


def current_version(db: peewee.Database) -> int | None:
    """The stamped schema version; None for a database without a schema_version table."""
    if not db.table_exists(VERSION_TABLE):
        return None
    with db.bind_ctx([SchemaVersion]):
        return SchemaVersion.select(peewee.fn.MAX(SchemaVersion.version)).scalar() or 0


def _stamp(db: peewee.Database, migration: Migration) -> None:
    with db.bind_ctx([SchemaVersion]):
        SchemaVersion.insert(version=migration.version, name=migration.name,
                             applied_at=datetime.datetime.now(datetime.UTC).replace(tzinfo=None)).execute()


def upgrade(db: peewee.Database, from_version: int, migrations: list[Migration]) -> list[int]:
    """Run the migrations newer than ``from_version``, stamping each. Returns the versions run."""
    migrator = pw_migrate.SchemaMigrator.from_database(db)
    ran = []
    for migration in migrations:
        if migration.version > from_version:
            migration.up(migrator, db)
            _stamp(db, migration)
            ran.append(migration.version)
    return ran


def apply(db: peewee.Database, migrations: list[Migration] | None = None) -> list[int]:
    """Bring the database to the latest schema (see the module doc). Returns the versions run."""
    migrations = MIGRATIONS if migrations is None else migrations
    latest = migrations[-1].version
    with db.connection_context(), db.bind_ctx(ALL_MODELS), _locked_transaction(db):
        with db.bind_ctx([SchemaVersion]):
            db.create_tables([SchemaVersion], safe=True)
        version = current_version(db) or 0
        ran: list[int] = []
        if version == 0 and not db.table_exists("flows"):  # a new database
            db.create_tables(ALL_MODELS, safe=True)
            for migration in migrations:
                _stamp(db, migration)
        elif version > latest:
            raise SchemaError(
                f"the database is at schema version {version}, newer than this Corral knows ({latest}): "
                "upgrade Corral, or point it at another database")
        else:
            ran = upgrade(db, version, migrations)
        db.create_tables(ALL_MODELS, safe=True)  # tables new in ALL_MODELS need no migration
    return ran
