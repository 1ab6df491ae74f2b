"""The record on PostgreSQL: the writer survives a dropped connection, and `corral flows --json`
prints the same types as on SQLite (booleans as booleans, times as ISO strings, floats unrounded).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support import corpus, pgdb
from tests.support.cli import corral
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream

NAME = "openai-chat-json-1"


@pytest.fixture(scope="module")
def pg_gw(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway recording into a throwaway PostgreSQL database, for this module."""
    pgdb.require()
    url = pgdb.create_database()
    try:
        with Gateway(mock.url, db=url, workdir=tmp_path_factory.mktemp("pg")) as gw:
            yield gw
    finally:
        pgdb.drop_database(url)


def call(gw: Gateway, tag: str, name: str = NAME) -> None:
    resp = httpx.post(gw.base("openai") + "/v1/chat/completions", json=corpus.load(name)["request"]["body"],
                      headers={"x-mock-exchange": name, "x-test-id": tag, "authorization": "Bearer sk-pg"}, timeout=20)
    assert resp.status_code == 200


def terminate_connections(url: str) -> int:
    conn = pgdb._admin()
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (url.rsplit("/", 1)[1],),
        )
        return len(cur.fetchall())
    finally:
        conn.close()


def test_writer_reconnects_after_the_connection_is_dropped(pg_gw: Gateway) -> None:
    gw = pg_gw
    for i in range(5):
        call(gw, f"before-{i}")
    gw.wait_rows(lambda r: "before-" in (r["request_headers"] or ""), 5)
    assert terminate_connections(gw.db) >= 1  # the gateway's writer (and our reader)
    gw._reader = None
    for i in range(5):
        call(gw, f"after-{i}")
    rows = gw.wait_rows(lambda r: "after-" in (r["request_headers"] or ""), 5, timeout=20)
    assert len(rows) == 5
    assert "dropped" not in gw.log()
    mine = [r for r in gw.rows() if any(t in (r["request_headers"] or "") for t in ("before-", "after-"))]
    assert len(mine) == 10


def _flows_json(gw: Gateway) -> dict:
    out = corral("flows", "--db", gw.db, "--json", "--limit", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.splitlines()[0])


@pytest.fixture
def sqlite_gw(gateway: Gateway, mock: MockUpstream, tmp_path) -> Iterator[Gateway]:
    """The session's gateway when it records into SQLite (the default), else one that does."""
    if not gateway.is_postgres:
        yield gateway
        return
    with Gateway(mock.url, db=f"sqlite:///{tmp_path / 'c.db'}", workdir=tmp_path) as gw:
        yield gw


def test_flows_json_is_the_same_on_sqlite_and_postgres(sqlite_gw: Gateway, pg_gw: Gateway, tag: str) -> None:
    got = {}
    for backend, gw in (("sqlite", sqlite_gw), ("postgres", pg_gw)):
        call(gw, f"{tag}-{backend}")
        gw.row_for(f"{tag}-{backend}")
        got[backend] = _flows_json(gw)  # the newest row: the one just made
    lite, pg = got["sqlite"], got["postgres"]
    assert list(lite) == list(pg)
    for key in lite:
        assert type(lite[key]) is type(pg[key]), (key, lite[key], pg[key])
    varying = {"id", "started_at", "ttfb_ms", "duration_ms"}
    assert {k: v for k, v in lite.items() if k not in varying} == {k: v for k, v in pg.items() if k not in varying}
    assert pg["stream"] is False and pg["complete"] is True and pg["unpriced"] is False
    assert isinstance(pg["cost_usd"], float) and pg["cost_usd"] > 0
    for row in (lite, pg):  # ISO 8601 in UTC, microseconds kept
        assert datetime.datetime.fromisoformat(row["started_at"]).tzinfo == datetime.UTC
