"""Opening the database named by a URL (peewee's playhouse.db_url), creating tables on first use."""

from __future__ import annotations

import os
from pathlib import Path

import peewee
from playhouse import db_url

from addon.storage.models import ALL_MODELS, database_proxy

SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers (CLI, viewer) never block the writer; survives SIGKILL
    "synchronous": "normal",  # safe with WAL; a crash loses at most the last batch, not the file
    "busy_timeout": 10000,
    "foreign_keys": 1,
}


class DatabaseError(RuntimeError):
    pass


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


def connect(url: str, create: bool = True) -> peewee.Database:
    """Open the database at ``url``, bind the models to it and create missing tables."""
    path = sqlite_path(url)
    try:
        if path is not None:
            if create:
                _prepare_sqlite_file(path)
            elif not path.exists():
                raise DatabaseError(f"no database at {path} (has the gateway run yet?)")
            db = db_url.connect(url, pragmas=SQLITE_PRAGMAS)
        else:
            db = db_url.connect(url)
    except (ValueError, RuntimeError, peewee.PeeweeException) as e:
        if isinstance(e, DatabaseError):
            raise
        raise DatabaseError(f"cannot open database {url!r}: {e}") from e
    database_proxy.initialize(db)
    if create:
        with db.connection_context():
            db.create_tables(ALL_MODELS, safe=True)
    return db
