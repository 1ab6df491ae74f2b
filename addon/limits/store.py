"""Where rate-limit windows are counted: a tiny interface over the `limits` package's async storage.

``[state] url`` chooses the backend: ``memory://`` (default, one gateway process) or, for several
gateway processes sharing one budget, any URI the `limits` package knows (``redis://host:6379`` ->
``async+redis://...``). Request windows are exact moving windows; token windows are sliding-window
counters (O(1) per bucket; a moving window would keep one entry per token).

Admission (``admit``) checks all windows of a request and charges them only if all fit, atomically:
in memory nothing in between yields to the event loop; on Redis it is one Lua script
(addon/limits/lua.py), so two gateways can never both take the last slot. Token corrections are one
script too (an INCRBY that never goes below zero). On Redis every call goes through a `Breaker`: a
failure raises `StateUnavailable` and the limiter applies ``[state] on_failure``.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

from limits.aio.storage import MemoryStorage, MovingWindowSupport, RedisStorage, SlidingWindowCounterSupport
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from addon import state
from addon.limits import lua as limits_lua
from addon.limits.config import Window

FORCE = 1 << 40  # a limit no charge can exceed: corrections are bookkeeping, never refused


class WindowStore(Protocol):
    async def fits(self, window: Window, key: str, cost: int) -> bool: ...
    async def charge(self, window: Window, key: str, cost: int) -> None: ...
    async def used(self, window: Window, key: str) -> int: ...
    async def wait_time(self, window: Window, key: str, cost: int) -> float: ...
    async def admit(self, windows: list[tuple[Window, str, int]]) -> int | None:
        """Charge every (window, key, cost) if all fit, else nothing; the index of a full window or None."""
        ...


class LazyExpiryMemoryStorage(MemoryStorage):
    """limits' async MemoryStorage starts a clean-up task on *every* call, and that task hands a bisect
    per key to the thread pool, a cost on every request (docs/decisions.md). Reads already ignore expired
    entries (counters check their expiry, moving windows their timestamps), so the clean-up only frees
    memory: once a second is plenty."""

    CLEANUP_EVERY = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._next_cleanup = 0.0

    async def _MemoryStorage__schedule_expiry(self) -> None:  # overrides the name-mangled private hook
        now = time.monotonic()
        if now >= self._next_cleanup:
            self._next_cleanup = now + self.CLEANUP_EVERY
            await super()._MemoryStorage__schedule_expiry()  # type: ignore[misc]


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
        self.shared = "redis" in uri.partition("://")[0]
        # limits' async Redis defaults to coredis; Corral's dependency is redis-py.
        options = {"implementation": "redispy", **state.client_options()} if self.shared else {}
        storage = LazyExpiryMemoryStorage() if uri.startswith("async+memory:") else storage_from_string(uri, **options)
        if not isinstance(storage, MovingWindowSupport) or not isinstance(storage, SlidingWindowCounterSupport):
            raise ValueError(f"{url!r}: this storage cannot count moving and sliding windows")
        self.storage = storage
        self.moving = MovingWindowRateLimiter(self.storage)
        self.counter = SlidingWindowCounterRateLimiter(self.storage)
        self.cluster = state.is_cluster(url)
        self.breaker = state.Breaker("rate limits")
        self._scripts: dict[str, object] = {}
        self.clock = time.time  # the `limits` package's windows run on wall-clock time too

    async def _guard(self, call):
        """Run one storage call; on a shared store, a failure becomes StateUnavailable (and trips the breaker)."""
        if not self.shared:
            return await call
        return await self.breaker.guard(call)

    def _redis(self) -> RedisStorage:
        """The storage, on the paths only a shared (Redis) store takes."""
        assert isinstance(self.storage, RedisStorage)
        return self.storage

    def _script(self, name: str):
        if name not in self._scripts:
            bridge = self._redis().bridge
            assert isinstance(bridge, RedispyBridge)  # implementation="redispy", see __init__
            self._scripts[name] = bridge.get_connection().register_script(getattr(limits_lua, name))
        return self._scripts[name]

    def _redis_keys(self, window: Window, key: str) -> list[str]:
        redis, full = self._redis(), self._key(window, key)
        if not window.counter:
            return [redis.bridge.prefixed_key(full)]
        return [redis.bridge.prefixed_key(redis._previous_window_key(full)),
                redis.bridge.prefixed_key(redis._current_window_key(full))]

    async def admit(self, windows: list[tuple[Window, str, int]]) -> int | None:
        if not self.shared:
            # In memory nothing below suspends, so check-then-charge cannot interleave with another flow.
            for i, (window, key, cost) in enumerate(windows):
                if not await self.fits(window, key, max(1, cost)):
                    return i
            for window, key, cost in windows:
                await self.charge(window, key, cost)
            return None
        # A cluster cannot run one script over keys in different slots: each window is admitted on its
        # own (still atomic per window; a later full window leaves the earlier ones charged, never over).
        groups = [[(i, w)] for i, w in enumerate(windows)] if self.cluster else [list(enumerate(windows))]
        for group in groups:
            keys, args = [], [self.clock()]
            for _i, (window, key, cost) in group:
                keys += self._redis_keys(window, key)
                args += [1 if window.counter else 0, window.amount, window.item.get_expiry(),
                         max(1, cost), max(0, cost)]
            full = await self._guard(self._script("ADMIT")(keys=keys, args=args))
            if full:
                return group[int(full) - 1][0]
        return None

    @staticmethod
    def _ids(window: Window, key: str) -> tuple[str, str, str]:
        return (window.limit, window.what, key)

    def _key(self, window: Window, key: str) -> str:
        return window.item.key_for(*self._ids(window, key))

    async def fits(self, window: Window, key: str, cost: int) -> bool:
        if cost > window.amount:
            return False
        strategy = self.counter if window.counter else self.moving
        return await self._guard(strategy.test(window.item, *self._ids(window, key), cost=max(1, cost)))

    async def charge(self, window: Window, key: str, cost: int) -> None:
        """Add ``cost`` (negative: give back, never below what the current window holds)."""
        if self.shared and window.counter:
            await self._guard(
                self._script("CORRECT")(keys=self._redis_keys(window, key), args=[window.item.get_expiry(), cost])
            )
            return
        if self.shared:
            await self._guard(self._charge(window, key, cost))
            return
        await self._charge(window, key, cost)

    async def _charge(self, window: Window, key: str, cost: int) -> None:
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
        stats = await self._guard(
            (self.counter if window.counter else self.moving).get_window_stats(window.item, *self._ids(window, key))
        )
        return max(0, window.amount - stats.remaining)

    async def wait_time(self, window: Window, key: str, cost: int) -> float:
        """Seconds until ``cost`` fits into the window (math.inf if it never can)."""
        item = window.item
        if cost > window.amount:
            return math.inf
        if not window.counter:
            stats = await self._guard(self.moving.get_window_stats(item, *self._ids(window, key)))
            return 0.0 if stats.remaining >= cost else max(0.0, stats.reset_time - self.clock())
        expiry = item.get_expiry()
        prev, prev_ttl, cur, cur_ttl = await self._guard(
            self.storage.get_sliding_window(self._key(window, key), expiry)
        )
        return counter_wait(prev, prev_ttl, cur, cur_ttl, expiry, window.amount, cost)


def counter_wait(
    prev: float, prev_ttl: float, cur: float, cur_ttl: float, expiry: float, limit: int, cost: int
) -> float:
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
