"""Batched database writes on a thread of their own, so no flow ever waits for the disk.

Rows are queued from the event loop (``submit`` never blocks nor wakes anyone per row) and written by
one thread in batches: whatever arrived within ``interval`` seconds, up to ``batch_size`` rows per
transaction. ``close`` drains the queue before returning, which is how SIGTERM loses nothing.

Several gateway processes (``--workers``) may write to one database, each with its own writer:
on SQLite a batch takes the write lock up front (BEGIN IMMEDIATE) and waits for it up to
busy_timeout; on PostgreSQL rows simply interleave. A lost connection (server restart, idle
timeout, pg_terminate_backend) is reopened and the batch retried; a batch that was in fact
committed before the connection broke is not doubled (primary key; see ``_write_one_by_one``).

A database that cannot take the batch (disk full, server down) keeps it: the writer retries it with
backoff (up to ``RETRY_MAX`` seconds apart) until it is written, logging the database's own error.
Meanwhile rows wait in memory, at most ``max_backlog_rows`` rows and ``max_backlog_bytes`` of
bodies; rows past that are dropped on arrival and counted (``dropped``). At shutdown a batch that
still fails after a few attempts is given up, and said so.

SIGKILL (or power loss) loses what is not yet committed: the rows of the last ``interval`` (50 ms)
plus the batch being written. ``interval`` is kept at or under ``MAX_INTERVAL``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

import peewee

from addon.storage import db as dbmod
from addon.storage.models import Flow

logger = logging.getLogger(__name__)

MAX_INTERVAL = 0.1  # the most rows a SIGKILL can lose: those of one interval (and the batch in flight)
RETRY_FIRST, RETRY_MAX = 0.1, 5.0  # seconds between attempts at a batch the database refused
SHUTDOWN_ATTEMPTS = 5  # attempts at a refused batch once stopping, before it is given up
_SIZED_FIELDS = ("request_body", "response_body", "response_text", "request_headers", "response_headers")


def _row_size(row: dict[str, Any]) -> int:
    return 512 + sum(len(row.get(name) or "") for name in _SIZED_FIELDS)


def _cause(e: BaseException) -> BaseException:
    """The database's own error. SQLite rolls a transaction back itself on SQLITE_FULL/IOERR; peewee's
    rollback then fails with "cannot rollback - no transaction is active", which hides the cause."""
    while "no transaction is active" in str(e) and e.__context__ is not None:
        e = e.__context__
    return e


def _default(field: peewee.Field) -> Any:
    return field.default() if callable(field.default) else field.default


class RecordWriter:
    def __init__(self, url: str, batch_size: int = 500, interval: float = 0.05,
                 max_backlog_rows: int = 20_000, max_backlog_bytes: int = 256 * 1024 * 1024) -> None:
        if not 0 < interval <= MAX_INTERVAL:
            raise ValueError(f"interval must be in (0, {MAX_INTERVAL}] seconds")
        self.url = url
        self.batch_size = batch_size
        self.interval = interval
        self.max_backlog_rows = max_backlog_rows
        self.max_backlog_bytes = max_backlog_bytes
        self.sleep = time.sleep  # tests replace it
        # A deque, not a queue.Queue: append/popleft are atomic and wake nobody, and the writer thread
        # is woken once per batch. Waking it per row costs two GIL hand-offs per request, which stall
        # the event loop under load (docs/decisions.md).
        self._rows: collections.deque[tuple[dict[str, Any], int]] = collections.deque()  # (row, size)
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._db: peewee.Database | None = None
        self.written = 0
        self.failed_batches = 0
        self.dropped = 0  # rows refused because the backlog was full (the database refused writes)
        self._submitted = 0  # only the submitting (event loop) thread changes it
        self._submitted_bytes = 0  # ... and this
        self._finished = 0  # rows written or given up on; only the writer thread changes it
        self._finished_bytes = 0  # ... and this
        self._shutdown_failures = 0
        self._idle = threading.Condition()
        self._sqlite_insert: str | None = None

    def start(self) -> None:
        """Open the database (raises DatabaseError on a bad URL) and start the writer thread."""
        self._db = dbmod.connect(self.url)
        self._thread = threading.Thread(target=self._run, name="corral-record-writer", daemon=True)
        self._thread.start()

    def submit(self, row: dict[str, Any]) -> None:
        """Queue a row; never blocks. Call from one thread (the event loop)."""
        size = _row_size(row)
        if (self._submitted - self._finished >= self.max_backlog_rows
                or self._submitted_bytes - self._finished_bytes + size > self.max_backlog_bytes):
            if self.dropped % 1000 == 0:
                logger.error("corral: record backlog full (the database is refusing writes): dropped %d rows",
                             self.dropped + 1)
            self.dropped += 1
            return
        self._submitted += 1
        self._submitted_bytes += size
        self._rows.append((row, size))
        if not self._wake.is_set():
            self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted row is written (tests, shutdown). True when drained."""
        target = self._submitted
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._finished < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(min(remaining, self.interval))
        return True

    def close(self, timeout: float = 30.0) -> None:
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        assert self._db is not None
        try:
            self._db.connect(reuse_if_open=True)
        except Exception as e:  # each write reconnects (peewee autoconnect)
            logger.warning("corral: database connect failed: %s", e)
        while True:
            self._wake.wait()
            self._wake.clear()
            stopping = self._stopping
            if not stopping:
                # Gather what arrives within the interval: one transaction for many rows.
                self.sleep(self.interval)
            while self._rows:
                batch: list[dict[str, Any]] = []
                size = 0
                while self._rows and len(batch) < self.batch_size:
                    row, row_size = self._rows.popleft()
                    batch.append(row)
                    size += row_size
                self._write(batch)
                with self._idle:
                    self._finished += len(batch)
                    self._finished_bytes += size
                    self._idle.notify_all()
            if stopping:
                break
        self._db.close()

    def _transaction(self):
        assert self._db is not None
        if isinstance(self._db, peewee.SqliteDatabase):
            return self._db.atomic("IMMEDIATE")
        return self._db.atomic()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        """Write ``batch``; while the database refuses it, retry with backoff (give up only at shutdown)."""
        assert self._db is not None
        attempt, delay, failing_since, dropped_before = 0, RETRY_FIRST, 0.0, 0
        while True:
            try:
                with self._transaction():
                    self._insert(batch)
                self.written += len(batch)
                if attempt:
                    lost = self.dropped - dropped_before
                    logger.warning("corral: database writes resumed after %.1f s%s", time.monotonic() - failing_since,
                                   f" ({lost} rows dropped meanwhile: the backlog was full)" if lost else "")
                return
            except peewee.IntegrityError:
                # A duplicate id in the batch: write row by row so one bad row loses nothing else.
                self._write_one_by_one(batch)
                return
            except Exception as e:  # a dead connection may raise the driver's own errors
                cause = _cause(e)
                attempt += 1
                if attempt == 1:
                    failing_since, dropped_before = time.monotonic(), self.dropped
                if attempt == 1 or (delay >= RETRY_MAX and attempt % 12 == 0):  # then about once a minute
                    logger.warning("corral: database write failed (%d rows waiting, attempt %d): %s",
                                   len(batch) + len(self._rows), attempt, cause)
            if self._stopping and attempt >= (1 if self._shutdown_failures else SHUTDOWN_ATTEMPTS):
                self._shutdown_failures += 1
                self.failed_batches += 1
                logger.error("corral: dropped %d records at shutdown: the database kept refusing them (%s)",
                             len(batch), cause)
                return
            self.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
            self._reconnect()

    def _insert(self, batch: list[dict[str, Any]]) -> None:
        """Insert ``batch`` (inside the caller's transaction).

        SQLite: one prepared statement through executemany, a fraction of the CPU per row of peewee's
        query builder (docs/decisions.md). It matters because this thread shares the GIL with the
        event loop. Other databases keep peewee's one multi-row INSERT (one round trip).
        """
        assert self._db is not None
        if not isinstance(self._db, peewee.SqliteDatabase):
            Flow.insert_many(batch).execute()
            return
        fields = Flow._meta.sorted_fields
        if self._sqlite_insert is None:
            columns = ", ".join(f'"{f.column_name}"' for f in fields)
            self._sqlite_insert = (
                f'INSERT INTO "{Flow._meta.table_name}" ({columns}) VALUES ({", ".join("?" * len(fields))})'
            )
        params = [tuple(f.db_value(row[f.name] if f.name in row else _default(f)) for f in fields) for row in batch]
        # sqlite3 errors -> peewee's, as insert_many raises them. peewee's stubs leave out this module global.
        with peewee.__exception_wrapper__:  # type: ignore[attr-defined]
            self._db.cursor().executemany(self._sqlite_insert, params)

    def _reconnect(self) -> None:
        assert self._db is not None
        try:
            self._db.close()
        except Exception:  # closing a broken connection may fail; drop it anyway
            self._db._state.reset()  # type: ignore[attr-defined]  # private; peewee's stubs leave it out
        try:
            self._db.connect(reuse_if_open=True)
        except Exception as e:
            logger.warning("corral: database reconnect failed: %s", e)

    def _write_one_by_one(self, batch: list[dict[str, Any]]) -> None:
        assert self._db is not None
        for row in batch:
            try:
                with self._transaction():
                    Flow.insert(row).execute()
                self.written += 1
            except peewee.IntegrityError:
                pass  # already recorded
            except peewee.PeeweeException as e:
                logger.error("corral: could not record flow %s: %s", row.get("id"), e)
