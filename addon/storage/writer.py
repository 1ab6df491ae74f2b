"""Batched database writes on a thread of their own, so no flow ever waits for the disk.

Rows are queued from the event loop (``submit`` never blocks nor wakes anyone per row) and written by
one thread in batches: whatever arrived within ``interval`` seconds, up to ``batch_size`` rows per
transaction. ``close`` drains the queue before returning, which is how SIGTERM loses nothing.

Several gateway processes (``--workers``) may write to one database, each with its own writer:
on SQLite a batch takes the write lock up front (BEGIN IMMEDIATE) and waits for it up to
busy_timeout; on PostgreSQL rows simply interleave. A lost connection (server restart, idle
timeout, pg_terminate_backend) is reopened and the batch retried; a batch that was in fact
committed before the connection broke is not doubled (primary key; see ``_write_one_by_one``).
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


def _default(field: peewee.Field) -> Any:
    return field.default() if callable(field.default) else field.default


class RecordWriter:
    def __init__(self, url: str, batch_size: int = 500, interval: float = 0.05) -> None:
        self.url = url
        self.batch_size = batch_size
        self.interval = interval
        # A deque, not a queue.Queue: append/popleft are atomic and wake nobody, and the writer thread
        # is woken once per batch. Waking it per row costs two GIL hand-offs per request, which stall
        # the event loop under load (docs/decisions.md).
        self._rows: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._db: peewee.Database | None = None
        self.written = 0
        self.failed_batches = 0
        self._submitted = 0  # only the submitting (event loop) thread changes it
        self._finished = 0  # rows written or given up on; only the writer thread changes it
        self._idle = threading.Condition()
        self._sqlite_insert: str | None = None

    def start(self) -> None:
        """Open the database (raises DatabaseError on a bad URL) and start the writer thread."""
        self._db = dbmod.connect(self.url)
        self._thread = threading.Thread(target=self._run, name="corral-record-writer", daemon=True)
        self._thread.start()

    def submit(self, row: dict[str, Any]) -> None:
        """Queue a row; never blocks. Call from one thread (the event loop)."""
        self._submitted += 1
        self._rows.append(row)
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
                time.sleep(self.interval)
            while self._rows:
                batch: list[dict[str, Any]] = []
                while self._rows and len(batch) < self.batch_size:
                    batch.append(self._rows.popleft())
                self._write(batch)
                with self._idle:
                    self._finished += len(batch)
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
        assert self._db is not None
        for attempt in range(5):
            try:
                with self._transaction():
                    self._insert(batch)
                self.written += len(batch)
                return
            except peewee.IntegrityError:
                # A duplicate id in the batch: write row by row so one bad row loses nothing else.
                self._write_one_by_one(batch)
                return
            except Exception as e:  # a dead connection may raise the driver's own errors
                logger.warning("corral: database write failed (attempt %d): %s", attempt + 1, e)
                time.sleep(0.2 * (attempt + 1))
                self._reconnect()
        self.failed_batches += 1
        logger.error("corral: dropped %d records after repeated database errors", len(batch))

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
