"""Opening the database named by a URL (peewee's playhouse.db_url) and bringing its schema up to date
(addon/storage/migrations.py): SQLite by default, PostgreSQL with ``postgresql://user@host[:port]/db``."""

from __future__ import annotations

import os
from pathlib import Path

import peewee
from playhouse import db_url

from addon.storage import migrations
from addon.storage.models import database_proxy

SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers (CLI, viewer) never block the writer; survives SIGKILL
    "synchronous": "normal",  # safe with WAL; a crash loses at most the last batch, not the file
    "busy_timeout": 10000,
    "foreign_keys": 1,
}


# peewee maps FloatField to REAL, which PostgreSQL stores in 4 bytes (~7 digits): costs would lose
# precision. DOUBLE PRECISION is what SQLite's REAL is anyway.
POSTGRES_FIELD_TYPES = {"FLOAT": "DOUBLE PRECISION"}


class DatabaseError(RuntimeError):
    pass


def is_postgres_url(url: str) -> bool:
    scheme = url.split(":", 1)[0]
    return scheme in ("postgres", "postgresql", "postgresext", "postgresqlext", "postgres+pool", "postgresql+pool")


def normalise_url(value: str) -> str:
    """A database setting as a URL: a plain file path (``/srv/corral.db``, ``data/x.db``) is SQLite."""
    if not value or "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///"):])


def _prepare_sqlite_file(path: Path) -> None:
    """Create the database file private (0600) before SQLite does; SQLite gives -wal/-shm the same mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


def open_url(url: str) -> peewee.Database:
    """The peewee Database for ``url`` (not connected yet), with Corral's settings per engine."""
    path = sqlite_path(url)
    if path is not None:
        return db_url.connect(url, pragmas=SQLITE_PRAGMAS)
    if is_postgres_url(url):
        return db_url.connect(url, field_types=POSTGRES_FIELD_TYPES)
    return db_url.connect(url)


def connect(url: str, create: bool = True) -> peewee.Database:
    """Open the database at ``url``, bind the models to it and bring its schema up to date.

    ``create=False`` (readers such as `corral flows`) refuses a SQLite file that does not exist yet."""
    url = normalise_url(url)
    path = sqlite_path(url)
    try:
        if path is not None:
            if create:
                _prepare_sqlite_file(path)
            elif not path.exists():
                raise DatabaseError(f"no database at {path} (has the gateway run yet?)")
        db = open_url(url)
    except (ValueError, RuntimeError, peewee.PeeweeException) as e:
        if isinstance(e, DatabaseError):
            raise
        raise DatabaseError(f"cannot open database {url!r}: {e}") from e
    try:
        migrations.apply(db)
    except migrations.SchemaError as e:
        raise DatabaseError(str(e)) from None
    except peewee.PeeweeException as e:
        raise DatabaseError(f"cannot open database {url!r}: {e}") from e
    database_proxy.initialize(db)
    return db
