"""Throwaway PostgreSQL databases for tests, and the backend switch of the whole suite.

``CORRAL_TEST_DB=postgres`` makes every gateway the tests start (the ``gateway`` fixture and any
``Gateway(...)`` without ``db=``) record into a fresh PostgreSQL database of its own, created here
as ``corral_test_<random>`` and dropped when the test session ends, so parallel runs never collide.
The server is the local one (``CORRAL_TEST_PG``, default ``postgresql://postgres@127.0.0.1:5432``;
scripts/ci-services.sh starts it when it is down).
"""

from __future__ import annotations

import os
import uuid

import pytest

PG_SERVER = os.environ.get("CORRAL_TEST_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
_created: list[str] = []


def backend() -> str:
    """"sqlite" (default) or "postgres": what gateways started by the tests record into."""
    value = os.environ.get("CORRAL_TEST_DB", "sqlite").lower()
    return "postgres" if value in ("postgres", "postgresql", "pg") else "sqlite"


def _admin():
    import psycopg2

    conn = psycopg2.connect(f"{PG_SERVER}/postgres", connect_timeout=5)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    return conn


def available() -> bool:
    try:
        _admin().close()
        return True
    except Exception:
        return False


def create_database() -> str:
    """A new empty database; returns its URL. Dropped by drop_all() (session end)."""
    name = f"corral_test_{uuid.uuid4().hex[:12]}"
    conn = _admin()
    try:
        conn.cursor().execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    _created.append(name)
    return f"{PG_SERVER}/{name}"


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = _admin()
    try:  # WITH (FORCE): a gateway or reader still connected must not keep it alive
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()
    if name in _created:
        _created.remove(name)


def drop_all() -> None:
    for name in list(_created):
        try:
            drop_database(f"{PG_SERVER}/{name}")
        except Exception:
            pass


def require() -> None:
    """Skip the calling test when no PostgreSQL server is reachable (fail instead under CI)."""
    if not available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER} (scripts/ci-services.sh starts it)")
        pytest.skip(f"PostgreSQL is not reachable at {PG_SERVER}")


sqlite_only = pytest.mark.skipif(backend() == "postgres", reason="checks the SQLite file itself")
