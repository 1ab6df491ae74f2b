"""Where budget spend is counted: admission reserves an estimate on every budget of a request, the
recorded cost replaces it afterwards, an error gives it back.

A request is admitted only if, for every budget that applies, spent + reserved + its estimate stays
within the limit: the request that would cross a budget is the one refused, and concurrent requests
cannot all slip in under it.

- ``MemoryLedger`` (no Redis): the database's sum for the period (re-read every ``[keys] spend_ttl``
  seconds, off the event loop) + this process's recorded flows not in the database yet + its
  reservations. Exact within one process (nothing between check and reserve yields to the event loop);
  several processes (machines, or ``--workers`` with ``[keys] ledger = "memory"``) see each other's
  spend only through the database, so each may admit up to one ``spend_ttl`` of traffic the others'
  limits would have refused.
- ``RedisLedger`` (``[state] url = redis://...``): one hash per budget and period in Redis, checked and
  reserved by one Lua script (addon/keys/lua.py), corrected by another: exact across every gateway
  sharing that Redis. A budget's hash is seeded once per period from the database.
- ``DatabaseLedger`` (addon/keys/dbledger.py, ``[keys] ledger = "database"``, the default with
  ``--workers`` and no Redis): the same in two tables of the database, exact across every process on it.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from addon import state
from addon.keys import lua, store
from addon.keys.budgets import Budget, BudgetState

NANO = 1_000_000_000  # Redis counts integer nano-dollars
EPSILON = 1e-12  # float sums of exact costs: a budget of exactly 10 requests admits the tenth
# (budget, period start, pending flow ids) -> (the database's sum, which of those flows it holds)
Reader = Callable[[Budget, datetime.datetime, list[str]], Awaitable[tuple[float, set[str]]]]


@dataclass(frozen=True)
class Refusal:
    """The budget that had no room for a request, as it stood."""

    state: BudgetState
    estimate_usd: float


_periods: dict[tuple[str, str], tuple[datetime.datetime, datetime.datetime | None]] = {}


def _bounds(budget: Budget, now: datetime.datetime, tz: str) -> tuple[datetime.datetime, datetime.datetime | None]:
    """store.period_bounds, computed once per period (time zone arithmetic is most of an admission's cost)."""
    cached = _periods.get((budget.period, tz))
    if cached is not None and cached[0] <= now and (cached[1] is None or now < cached[1]):
        return cached
    _periods[(budget.period, tz)] = bounds = store.period_bounds(budget.period, now, tz)
    return bounds


class MemoryLedger:
    def __init__(self, reader: Reader, clock: Callable[[], float]) -> None:
        self.reader, self.clock = reader, clock
        self.ttl = 2.0
        self._db: dict[tuple[str, datetime.datetime], tuple[float, float]] = {}  # slot -> (until, usd)
        self._pending: dict[tuple[str, datetime.datetime], dict[str, float]] = {}  # recorded, not yet read back
        self._reserved: dict[tuple[str, datetime.datetime], dict[str, float]] = {}  # admitted, running
        self._flows: dict[str, list[tuple[str, datetime.datetime]]] = {}  # flow id -> its slots
        # Running sums of the two dicts above: an admission costs O(budgets), whatever the traffic.
        self._pending_sum: dict[tuple[str, datetime.datetime], float] = {}
        self._reserved_sum: dict[tuple[str, datetime.datetime], float] = {}
        self._refreshing: dict[tuple[str, datetime.datetime], asyncio.Future[None]] = {}

    def clear(self) -> None:
        self._db.clear()

    async def _fresh(self, budget: Budget, start: datetime.datetime) -> None:
        slot = (budget.id, start)
        cached = self._db.get(slot)
        if cached is not None and cached[0] > self.clock():
            return
        running = self._refreshing.get(slot)
        if running is None:  # one query per budget at a time, whatever the number of waiting requests
            running = asyncio.ensure_future(self._refresh(budget, start))
            self._refreshing[slot] = running
            running.add_done_callback(lambda _: self._refreshing.pop(slot, None))
        await asyncio.shield(running)

    async def _refresh(self, budget: Budget, start: datetime.datetime) -> None:
        slot = (budget.id, start)
        total, written = await self.reader(budget, start, list(self._pending.get(slot, {})))
        pending = self._pending.get(slot, {})
        for flow_id in written:
            pending.pop(flow_id, None)
        self._pending_sum[slot] = sum(pending.values())  # recomputed: no float drift builds up
        self._db[slot] = (self.clock() + self.ttl, total)

    def _spent(self, slot: tuple[str, datetime.datetime]) -> tuple[float, float]:
        return (self._db.get(slot, (0.0, 0.0))[1] + self._pending_sum.get(slot, 0.0),
                max(0.0, self._reserved_sum.get(slot, 0.0)))

    async def admit(self, flow_id: str, budgets: list[Budget], estimate: float, now: datetime.datetime,
                    tz: str) -> Refusal | None:
        bounds = [_bounds(b, now, tz) for b in budgets]
        for budget, (start, _) in zip(budgets, bounds, strict=True):
            await self._fresh(budget, start)
        # From here to the reservation nothing yields to the event loop: no other flow can take the room.
        for budget, (start, end) in zip(budgets, bounds, strict=True):
            spent, reserved = self._spent((budget.id, start))
            if spent + reserved + estimate > budget.usd + EPSILON:
                return Refusal(BudgetState(budget, spent, reserved, start, end), estimate)
        slots = [(b.id, start) for b, (start, _) in zip(budgets, bounds, strict=True)]
        for slot in slots:
            self._reserved.setdefault(slot, {})[flow_id] = estimate
            self._reserved_sum[slot] = self._reserved_sum.get(slot, 0.0) + estimate
        self._flows[flow_id] = slots
        return None

    async def settle(self, flow_id: str, usd: float) -> None:
        for slot in self._flows.pop(flow_id, ()):
            reserved = self._reserved.get(slot, {})
            self._reserved_sum[slot] = self._reserved_sum.get(slot, 0.0) - reserved.pop(flow_id, 0.0)
            if not reserved:
                self._reserved_sum[slot] = 0.0  # nothing in flight: exactly zero, whatever the rounding
            if usd > 0:
                self._pending.setdefault(slot, {})[flow_id] = usd
                self._pending_sum[slot] = self._pending_sum.get(slot, 0.0) + usd

    def holds(self, flow_id: str) -> bool:
        return flow_id in self._flows

    async def states(self, budgets: list[Budget], now: datetime.datetime, tz: str) -> list[BudgetState]:
        out = []
        for budget in budgets:
            start, end = _bounds(budget, now, tz)
            await self._fresh(budget, start)
            spent, reserved = self._spent((budget.id, start))
            out.append(BudgetState(budget, spent, reserved, start, end))
        return out


class RedisLedger:
    def __init__(self, url: str, reader: Reader) -> None:
        self.url, self.reader = url, reader
        self.client = state.async_client(url)
        self.breaker = state.Breaker("budgets")
        self._scripts = {name: self.client.register_script(getattr(lua, name))
                         for name in ("ADMIT", "SEED", "SETTLE", "READ")}
        self._flows: dict[str, tuple[list[str], int]] = {}  # flow id -> (its hashes, its estimate in nano-USD)

    @staticmethod
    def key(budget: Budget, start: datetime.datetime) -> str:
        return f"{{corral:budget}}:{budget.id}:{start:%Y%m%dT%H%M}"

    async def _call(self, name: str, keys: list[str], args: list) -> list:
        return await self.breaker.guard(self._scripts[name](keys=keys, args=args))

    async def _seed(self, budget: Budget, start: datetime.datetime, end: datetime.datetime | None) -> None:
        total, _ = await self.reader(budget, start, [])
        # A period's hash outlives its end by a day: a late correction still finds it, then it goes.
        expire = 0 if end is None else int((end.replace(tzinfo=datetime.UTC).timestamp() + 86400) * 1000)
        await self._call("SEED", [self.key(budget, start)], [round(total * NANO), expire])

    async def admit(self, flow_id: str, budgets: list[Budget], estimate: float, now: datetime.datetime,
                    tz: str) -> Refusal | None:
        bounds = [_bounds(b, now, tz) for b in budgets]
        keys = [self.key(b, start) for b, (start, _) in zip(budgets, bounds, strict=True)]
        est = round(estimate * NANO)
        limits = [round(b.usd * NANO) for b in budgets]
        for _ in range(len(budgets) + 1):
            result = await self._call("ADMIT", keys, [est, *limits])
            index = int(result[0])
            if index == 0:
                self._flows[flow_id] = (keys, est)
                return None
            if index > 0:
                budget, (start, end) = budgets[index - 1], bounds[index - 1]
                return Refusal(BudgetState(budget, int(result[1]) / NANO, int(result[2]) / NANO, start, end), estimate)
            budget, (start, end) = budgets[-index - 1], bounds[-index - 1]
            await self._seed(budget, start, end)
        raise state.StateUnavailable("budgets: Redis lost the budget hashes while seeding them")

    async def settle(self, flow_id: str, usd: float) -> None:
        keys, est = self._flows.pop(flow_id, ([], 0))
        if keys:
            await self._call("SETTLE", keys, [est, max(0, round(usd * NANO))])

    def holds(self, flow_id: str) -> bool:
        return flow_id in self._flows

    async def states(self, budgets: list[Budget], now: datetime.datetime, tz: str) -> list[BudgetState]:
        bounds = [_bounds(b, now, tz) for b in budgets]
        keys = [self.key(b, start) for b, (start, _) in zip(budgets, bounds, strict=True)]
        if not keys:
            return []
        values = await self._call("READ", keys, [])
        out = []
        for i, (budget, (start, end)) in enumerate(zip(budgets, bounds, strict=True)):
            spent, reserved, exists = (int(v) for v in values[3 * i:3 * i + 3])
            if not exists:
                await self._seed(budget, start, end)
                spent, reserved = (int(v) for v in await self._call("SEED", [keys[i]], [0, 0]))
            out.append(BudgetState(budget, spent / NANO, reserved / NANO, start, end))
        return out

    async def close(self) -> None:
        await self.client.aclose()
