"""The record writer when the database refuses writes (disk full), and how many rows a SIGKILL can cost.

The disk is "full" for real: SQLite's ``max_page_count`` pragma, set on the writer's own connection
just before its insert, makes the insert fail with SQLITE_FULL exactly as a full disk does. Waits
between attempts go through ``writer.sleep``, recorded and shortened, never asserted as wall time.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterator

import pytest

from addon.storage.models import Flow
from addon.storage.writer import MAX_INTERVAL, RecordWriter
from tests.support.reliability import reliability


def row(i: int) -> dict:
    return {"id": f"r{i}", "started_at": datetime.datetime(2026, 1, 1), "mode": "reverse", "method": "POST",
            "path": "/x", "response_body": "x" * 50_000}


class Disk:
    """Full for the writer's next ``full_for`` inserts, then there is space again."""

    def __init__(self, writer: RecordWriter, full_for: int) -> None:
        self.writer, self.full_for, self.refused = writer, full_for, 0
        self.waits: list[float] = []
        self.insert = writer._insert
        writer._insert = self._insert  # type: ignore[method-assign]
        writer.sleep = self._sleep

    def _insert(self, batch: list) -> None:
        db = self.writer._db
        assert db is not None
        pages = db.execute_sql("PRAGMA page_count").fetchone()[0]
        full = self.refused < self.full_for
        db.execute_sql(f"PRAGMA max_page_count = {pages if full else 1 << 30}")
        if full:
            self.refused += 1
        self.insert(batch)

    def _sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(0.001)


@pytest.fixture
def writer(tmp_path) -> Iterator[RecordWriter]:
    w = RecordWriter(f"sqlite:///{tmp_path / 'corral.db'}")
    w.start()
    w.submit(row(0))  # the schema's first pages are there; the disk fills from here on
    assert w.flush()
    yield w
    w._stopping = True
    w.close()


def stored() -> int:
    return Flow.select().count()


@reliability(
    "file safety", "disk full while recording (SQLITE_FULL), then space returns",
    "answers as usual", "the database's own error logged; rows kept in memory and written once space returns",
)
def test_disk_full_keeps_the_rows_and_writes_them_when_space_returns(
    writer: RecordWriter, caplog: pytest.LogCaptureFixture
) -> None:
    disk = Disk(writer, full_for=8)
    with caplog.at_level(logging.WARNING, logger="addon.storage.writer"):
        for i in range(1, 4):
            writer.submit(row(i))
        assert writer.flush(timeout=30)
    assert disk.refused == 8 and stored() == 4 and writer.dropped == 0 and writer.failed_batches == 0
    assert "database or disk is full" in caplog.text
    assert "cannot rollback" not in caplog.text
    assert "resumed" in caplog.text
    assert disk.waits[:8] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0]  # the interval, then the backoff


@reliability(
    "file safety", "disk full for long (backlog limit reached)",
    "answers as usual", "at most max_backlog_rows rows kept; the rest dropped and counted",
)
def test_the_backlog_while_the_disk_is_full_is_bounded(writer: RecordWriter) -> None:
    writer.max_backlog_rows = 5
    disk = Disk(writer, full_for=1 << 30)
    for i in range(1, 21):
        writer.submit(row(i))
    assert writer.dropped == 15
    disk.full_for = 0
    assert writer.flush(timeout=30)
    assert stored() == 6  # row 0, then the five kept


def test_the_backlog_is_bounded_in_bytes_too(writer: RecordWriter) -> None:
    writer.max_backlog_bytes = 200_000  # four rows of 50 KB bodies
    Disk(writer, full_for=1 << 30)
    for i in range(1, 11):
        writer.submit(row(i))
    assert writer.dropped == 7


def test_at_shutdown_a_batch_the_database_keeps_refusing_is_given_up(
    writer: RecordWriter, caplog: pytest.LogCaptureFixture
) -> None:
    Disk(writer, full_for=1 << 30)
    writer.submit(row(1))
    with caplog.at_level(logging.ERROR, logger="addon.storage.writer"):
        writer.close()
    assert writer.failed_batches == 1 and "dropped 1 records at shutdown" in caplog.text


@reliability(
    "load and shutdown", "SIGKILL of the gateway",
    "-", "rows of at most the last flush interval (50 ms, bounded at 100 ms) plus the batch being written lost",
)
def test_a_row_waits_at_most_one_flush_interval_before_its_commit(tmp_path) -> None:
    writer = RecordWriter(f"sqlite:///{tmp_path / 'corral.db'}")
    assert writer.interval <= MAX_INTERVAL == 0.1
    with pytest.raises(ValueError):
        RecordWriter("sqlite:///x.db", interval=0.5)
    waits: list[float] = []
    writer.sleep = waits.append  # no real wait at all: the commit follows the one interval
    writer.start()
    try:
        writer.submit(row(1))
        assert writer.flush()
        assert waits == [writer.interval]
        assert stored() == 1
    finally:
        writer.close()
