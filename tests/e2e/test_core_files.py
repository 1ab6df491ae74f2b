"""File safety: the record holds prompts and answers, so it is private to its owner."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.support.gateway import Gateway
from tests.support.pgdb import sqlite_only
from tests.support.reliability import reliability


@sqlite_only
@reliability("file safety", "SQLite database, -wal and -shm", "-", "created mode 0600")
def test_database_and_its_wal_files_are_mode_0600(gateway: Gateway, fresh_mock, tag: str) -> None:
    import httpx

    fresh_mock.enqueue("openai-chat-json-1")
    httpx.post(gateway.base("openai") + "/v1/chat/completions", json={"model": "m", "messages": []},
               headers={"x-test-id": tag}, timeout=20)
    gateway.row_for(tag)
    db = Path(gateway.db.removeprefix("sqlite:///"))
    files = [p for p in db.parent.glob(db.name + "*")]
    assert {p.name for p in files} >= {db.name, db.name + "-wal", db.name + "-shm"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
