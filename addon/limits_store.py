"""Where rate-limit windows are counted: a tiny interface over the `limits` package's async storage.

``[state] url`` chooses the backend: ``memory://`` (default, one gateway process) or, for several
gateway processes sharing one budget, any URI the `limits` package knows (``redis://host:6379`` ->
``async+redis://...``). Request windows are exact moving windows; token windows are sliding-window
counters (O(1) per bucket; a moving window would keep one entry per token).

Admission is "check all windows, then charge all": with the in-memory storage nothing in between
yields to the event loop, so it is atomic; with a shared network store two gateways may both admit
the last slot (a slight overshoot, never a lost charge).
"""

from __future__ import annotations

import math
import time
from typing import Protocol

from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from addon.limits_config import Window

FORCE = 1 << 40  # a limit no charge can exceed: corrections are bookkeeping, never refused


class WindowStore(Protocol):
    async def fits(self, window: Window, key: str, cost: int) -> bool: ...
    async def charge(self, window: Window, key: str, cost: int) -> None: ...
    async def used(self, window: Window, key: str) -> int: ...
    async def wait_time(self, window: Window, key: str, cost: int) -> float: ...


def storage_uri(url: str) -> str:
    """`limits` wants its async storages as ``async+<scheme>://``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"[state] url must look like memory:// or redis://host:6379, got {url!r}")
    return url if scheme.startswith("async+") else f"async+{scheme}://{rest}"


class LimitsStore:
    """WindowStore on `limits`: MovingWindowRateLimiter for requests, SlidingWindowCounter for tokens."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        uri = storage_uri(url)
        # limits' async Redis defaults to coredis; Corral's optional dependency is redis-py.
        options = {"implementation": "redispy"} if "redis" in uri.partition("://")[0] else {}
        self.storage = storage_from_string(uri, **options)
        self.moving = MovingWindowRateLimiter(self.storage)
        self.counter = SlidingWindowCounterRateLimiter(self.storage)

    @staticmethod
    def _ids(window: Window, key: str) -> tuple[str, str, str]:
        return (window.limit, window.what, key)

    def _key(self, window: Window, key: str) -> str:
        return window.item.key_for(*self._ids(window, key))

    async def fits(self, window: Window, key: str, cost: int) -> bool:
        if cost > window.amount:
            return False
        strategy = self.counter if window.counter else self.moving
        return await strategy.test(window.item, *self._ids(window, key), cost=max(1, cost))

    async def charge(self, window: Window, key: str, cost: int) -> None:
        """Add ``cost`` (negative: give back, never below what the current window holds)."""
        expiry = window.item.get_expiry()
        if not window.counter:
            if cost > 0:
                await self.storage.acquire_entry(self._key(window, key), FORCE, expiry, cost)
            return
        if cost < 0:
            _prev, _ttl, current, _cttl = await self.storage.get_sliding_window(self._key(window, key), expiry)
            cost = -min(-cost, current)
        if cost:
            await self.storage.acquire_sliding_window_entry(self._key(window, key), FORCE, expiry, cost)

    async def used(self, window: Window, key: str) -> int:
        stats = await (self.counter if window.counter else self.moving).get_window_stats(window.item, *self._ids(window, key))
        return max(0, window.amount - stats.remaining)

    async def wait_time(self, window: Window, key: str, cost: int) -> float:
        """Seconds until ``cost`` fits into the window (math.inf if it never can)."""
        item = window.item
        if cost > window.amount:
            return math.inf
        if not window.counter:
            stats = await self.moving.get_window_stats(item, *self._ids(window, key))
            return 0.0 if stats.remaining >= cost else max(0.0, stats.reset_time - time.time())
        expiry = item.get_expiry()
        prev, prev_ttl, cur, cur_ttl = await self.storage.get_sliding_window(self._key(window, key), expiry)
        return counter_wait(prev, prev_ttl, cur, cur_ttl, expiry, window.amount, cost)


def counter_wait(prev: float, prev_ttl: float, cur: float, cur_ttl: float, expiry: float, limit: int, cost: int) -> float:
    """Sliding-window counter: the weighted count is prev * (time left in the current window) / expiry
    + cur. Solve for when it drops to ``limit - cost``: first the previous window fades out; if the
    current one alone is too full, it must become the previous one and fade in turn."""
    room = limit - cost
    weighted = (prev * prev_ttl / expiry if prev else 0.0) + cur
    if math.floor(weighted) <= room:
        return 0.0
    left = cur_ttl - expiry  # time until the current window ends
    if cur <= room:
        return max(0.0, left - (room - cur) * expiry / prev) if prev else 0.0
    return max(0.0, left) + expiry * (1 - room / cur)
