"""DatabaseLedger (``[keys] ledger = "database"``, the default of ``corral start --workers N`` without
Redis): budget admission exact across every process sharing the database, no Redis needed.

Each budget and period is one ``budget_slots`` row (settled spend, integer nano-dollars, seeded once
from the recorded flows); each admitted request still running holds one ``budget_holds`` row per
budget. Admission is one write transaction (SQLite ``BEGIN IMMEDIATE``; PostgreSQL a transaction-level
advisory lock): it checks every budget of the request and inserts holds on all of them or on none, so
no other process can take the same room in between. Settlement is another: the holds go, the exact
charge is added to the slots. Both run on KeyBook's database thread, never on the event loop.

A hold older than ``HOLD_TTL`` no longer counts: it belongs to a process that died before settling.
"""

from __future__ import annotations

import datetime
import zlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import peewee

from addon.keys.budgets import Budget, BudgetState
from addon.keys.ledger import NANO, Refusal, _bounds
from addon.state import StateUnavailable

HOLD_TTL = 3600  # seconds: longer than any request runs
_PG_LOCK_KEY = zlib.crc32(b"corral-budget-ledger")  # PostgreSQL advisory lock every admission takes

# fn(db, *args) run on the keys thread
Runner = Callable[..., Awaitable[Any]]
# (db, budget, period start) -> the recorded flows' USD in that period: a slot's seed
Seeder = Callable[[peewee.Database, Budget, datetime.datetime], float]


@contextmanager
def _locked(db: peewee.Database) -> Iterator[None]:
    """A write transaction no other process's admission or settlement runs beside."""
    if isinstance(db, peewee.SqliteDatabase):
        with db.atomic("IMMEDIATE"):  # takes the write lock at BEGIN: no read-then-upgrade race
            yield
        return
    with db.atomic():
        if isinstance(db, peewee.PostgresqlDatabase):
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
        yield


class DatabaseLedger:
    def __init__(self, run: Runner, seed: Seeder, wallclock: Callable[[], float]) -> None:
        self.run, self.seed, self.wallclock = run, seed, wallclock
        self._flows: dict[str, list[str]] = {}  # flow id -> the slots it holds room on

    @staticmethod
    def slot(budget: Budget, start: datetime.datetime) -> str:
        return f"{budget.id}@{start.isoformat()}"

    @staticmethod
    def _found(db: peewee.Database, slots: list[str], now: int) -> dict[str, tuple[int, int]]:
        """{slot: (spent, reserved)} of the slots that exist."""
        p = db.param
        return {row[0]: (int(row[1]), int(row[2])) for row in db.execute_sql(
            f"SELECT s.slot, s.spent_nano, (SELECT COALESCE(SUM(h.nano), 0) FROM budget_holds h "
            f"WHERE h.slot = s.slot AND h.at >= {p}) FROM budget_slots s "
            f"WHERE s.slot IN ({', '.join([p] * len(slots))})", (now - HOLD_TTL, *slots))}

    def _figures(self, db: peewee.Database, budgets: list[Budget], starts: list[datetime.datetime],
                 now: int) -> list[tuple[int, int]]:
        """(spent, reserved) of each budget's period in nano-dollars, new slots seeded. In a transaction."""
        p, slots = db.param, [self.slot(b, start) for b, start in zip(budgets, starts, strict=True)]
        found = self._found(db, slots, now)
        for budget, start, slot in zip(budgets, starts, slots, strict=True):
            if slot not in found:
                spent = round(self.seed(db, budget, start) * NANO)
                db.execute_sql(f"INSERT INTO budget_slots (slot, spent_nano) VALUES ({p}, {p})", (slot, spent))
                # A new period: holds of processes that died long ago go (once per budget and period).
                db.execute_sql(f"DELETE FROM budget_holds WHERE at < {p}", (now - HOLD_TTL,))
                found[slot] = (spent, 0)
        return [found[slot] for slot in slots]

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await self.run(fn, *args)
        except peewee.PeeweeException as e:  # locked past busy_timeout, database gone: [state] on_failure decides
            raise StateUnavailable(f"database ledger: {e}") from e

    async def admit(self, flow_id: str, budgets: list[Budget], estimate: float, now: datetime.datetime,
                    tz: str) -> Refusal | None:
        if not budgets:
            return None
        bounds = [_bounds(b, now, tz) for b in budgets]
        slots = [self.slot(b, start) for b, (start, _) in zip(budgets, bounds, strict=True)]
        est, at = round(estimate * NANO), int(self.wallclock())

        def admit(db: peewee.Database) -> tuple[int, int, int] | None:
            with _locked(db):
                figures = self._figures(db, budgets, [start for start, _ in bounds], at)
                for i, (budget, (spent, reserved)) in enumerate(zip(budgets, figures, strict=True)):
                    if spent + reserved + est > round(budget.usd * NANO):
                        return i, spent, reserved
                p = db.param
                db.execute_sql("INSERT INTO budget_holds (flow_id, slot, nano, at) VALUES "
                               + ", ".join([f"({p}, {p}, {p}, {p})"] * len(slots)),
                               [v for slot in slots for v in (flow_id, slot, est, at)])
                return None

        refused = await self._run(admit)
        if refused is None:
            self._flows[flow_id] = slots
            return None
        i, spent, reserved = refused
        start, end = bounds[i]
        return Refusal(BudgetState(budgets[i], spent / NANO, reserved / NANO, start, end), estimate)

    async def settle(self, flow_id: str, usd: float) -> None:
        slots = self._flows.pop(flow_id, [])
        if not slots:
            return
        charge = max(0, round(usd * NANO))

        def settle(db: peewee.Database) -> None:
            p = db.param
            with _locked(db):
                db.execute_sql(f"DELETE FROM budget_holds WHERE flow_id = {p}", (flow_id,))
                if charge:
                    db.execute_sql(f"UPDATE budget_slots SET spent_nano = spent_nano + {p} "
                                   f"WHERE slot IN ({', '.join([p] * len(slots))})", (charge, *slots))

        await self._run(settle)

    def holds(self, flow_id: str) -> bool:
        return flow_id in self._flows

    async def states(self, budgets: list[Budget], now: datetime.datetime, tz: str) -> list[BudgetState]:
        bounds = [_bounds(b, now, tz) for b in budgets]
        at = int(self.wallclock())

        def read(db: peewee.Database) -> list[tuple[int, int]]:
            slots = [self.slot(b, start) for b, (start, _) in zip(budgets, bounds, strict=True)]
            with db.atomic():  # a reader: no write lock while every slot exists
                found = self._found(db, slots, at)
            if len(found) == len(set(slots)):
                return [found[slot] for slot in slots]
            with _locked(db):  # a slot to seed
                return self._figures(db, budgets, [start for start, _ in bounds], at)

        figures = await self._run(read) if budgets else []
        return [BudgetState(b, spent / NANO, reserved / NANO, start, end)
                for b, (start, end), (spent, reserved) in zip(budgets, bounds, figures, strict=True)]
