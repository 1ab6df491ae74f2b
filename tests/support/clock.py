"""A fake clock for in-process tests: time moves only when every task under test is asleep.

Code that waits takes an injected ``clock`` (a ``time.monotonic`` stand-in) and ``sleep`` (an
``asyncio.sleep`` stand-in): the Relay's waits between attempts, the RateLimiter's queue. With
``FakeClock`` as both, a wait of a minute takes no time, every wait asked for is recorded in
``waits``, and what the code measures (``corral.wait_ms``) is exact.

``run(*coroutines)`` drives them: it lets the event loop work until there are as many sleepers as
unfinished coroutines and the loop has settled (loopback socket data written on this loop is delivered
within a few turns of it), then moves the clock to the earliest wake-up and wakes the sleepers due
then, in the order they went to sleep. Ties and ordering are therefore deterministic. The sleepers may
be other tasks of the loop than the coroutines run (a server's handler): what they send is delivered
before the clock moves on. Servers in other threads are not waited for: use them without the clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import types
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

START = 1_700_000_000.0  # an epoch: the `limits` package keeps its windows in wall-clock seconds
SETTLE = 20  # turns of the loop before the clock moves: each one polls the sockets without blocking


class FakeClock:
    def __init__(self, start: float = START) -> None:
        self.now = start
        self.waits: list[float] = []  # every sleep asked for, in order
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._changed: asyncio.Event | None = None

    # --- the two seams -----------------------------------------------------------------------

    def __call__(self) -> float:
        return self.now

    time = monotonic = __call__

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._seq), future))
        self._poke()
        await future

    # --- driving -----------------------------------------------------------------------------

    @property
    def sleeping(self) -> int:
        return sum(1 for *_, f in self._sleepers if not f.done())

    def _poke(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def run(self, *coroutines: Awaitable[Any], give_up_after: float = 10.0) -> list[Any]:
        """Run ``coroutines`` to the end on this clock; their results in order.

        ``give_up_after`` is real time and only a safety net for a test that waits on something other
        than the clock forever (a bug): nothing here waits for it to pass.
        """
        self._changed = asyncio.Event()
        tasks = [asyncio.ensure_future(c) for c in coroutines]
        for task in tasks:
            task.add_done_callback(lambda _t: self._poke())
        try:
            async with asyncio.timeout(give_up_after):
                while True:
                    live = [t for t in tasks if not t.done()]
                    if not live:
                        break
                    if self.sleeping >= len(live):
                        before = (self.sleeping, len(live))
                        for _ in range(SETTLE):
                            await asyncio.sleep(0)
                        if (self.sleeping, sum(not t.done() for t in tasks)) == before:
                            self._wake_next()
                    else:
                        self._changed.clear()
                        await self._changed.wait()
        finally:
            for task in tasks:
                task.cancel()
            self._changed = None
        return [t.result() for t in tasks]

    def _wake_next(self) -> None:
        """Move to the earliest wake-up time and wake everyone due then."""
        while self._sleepers and self._sleepers[0][2].done():  # cancelled sleepers
            heapq.heappop(self._sleepers)
        if not self._sleepers:
            return
        self.now = max(self.now, self._sleepers[0][0])
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)


@contextmanager
def limits_on(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The `limits` package's in-memory windows read ``clock`` instead of the wall clock.

    Its storage and strategies call ``time.time()`` on their module's ``time``; this swaps that
    module reference (the real ``time`` module is left alone).
    """
    import limits.aio.storage.memory
    import limits.aio.strategies

    fake = types.SimpleNamespace(time=clock.time, monotonic=clock.monotonic)
    with monkeypatch.context() as patch:
        patch.setattr(limits.aio.storage.memory, "time", fake)
        patch.setattr(limits.aio.strategies, "time", fake)
        yield
