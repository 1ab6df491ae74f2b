"""Shared state (``[state] url``): what Redis means for rate limits and the response cache.

- ``memory://`` (default): every gateway process keeps its own windows; the cache uses the record DB.
- ``redis://host:6379[/db]``, ``rediss://...`` (TLS), ``unix:///path.sock``: rate-limit windows and the
  response cache live in that Redis, shared by every gateway pointing at it.
- ``redis+cluster://host:port[,host:port]``: the same on a Redis Cluster (all cache keys share one hash
  slot through the ``{corral:cache}`` tag, so its scripts stay single-slot).

When Redis cannot be reached, ``[state] on_failure`` decides for limits: ``open`` (default: requests
pass uncounted) or ``closed`` (Corral answers 503 in the provider's shape); the cache is bypassed (a miss,
nothing stored). Either way the flow gets ``corral.state_degraded`` and the client the response header
``x-corral-state: degraded`` (recorded with the response headers). A ``Breaker`` skips Redis for a
second after a failure, so an outage costs no per-request connect timeouts; the next call after that
reconnects by itself (redis-py opens a new connection), no restart needed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from mitmproxy import http

from addon import metadata as md

logger = logging.getLogger(__name__)

STATE_HEADER = "x-corral-state"
ON_FAILURE = ("open", "closed")
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
RETRY_AFTER_DOWN = 1.0  # seconds a failed Redis is left alone before the next try
SOCKET_TIMEOUT = 2.0  # a hung Redis costs a flow at most this much, then counts as down


def scheme(url: str) -> str:
    return url.partition("://")[0].lower().removeprefix("async+")


def is_redis(url: str) -> bool:
    return scheme(url) in REDIS_SCHEMES


def is_cluster(url: str) -> bool:
    return scheme(url).endswith("+cluster")


def client_options() -> dict[str, Any]:
    """redis-py options for every Corral connection: short timeouts, one immediate retry (a pooled
    connection that died with a Redis restart is replaced at once instead of failing the call)."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": SOCKET_TIMEOUT, "retry": Retry(NoBackoff(), 1)}


def async_client(url: str):
    """A redis.asyncio client (or cluster client) for ``url``; connects lazily, on first command."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster

    if is_cluster(url):
        plain = url.replace("+cluster://", "://", 1)
        return RedisCluster.from_url(plain, **client_options())
    return aioredis.Redis.from_url(url, **client_options())


class Breaker:
    """Remembers that Redis just failed, so calls in the next second fail fast; logs each transition once."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down_until = 0.0
        self.down = False
        self.clock = time.monotonic  # tests move it past the pause instead of waiting it out

    def check(self) -> None:
        if self.down and self.clock() < self.down_until:
            raise StateUnavailable(f"{self.what}: Redis unavailable (retrying every {RETRY_AFTER_DOWN:.0f} s)")

    def failed(self, error: BaseException) -> StateUnavailable:
        if not self.down:
            logger.warning("corral: %s: Redis unavailable (%s); degraded until it is back", self.what, error)
        self.down = True
        self.down_until = self.clock() + RETRY_AFTER_DOWN
        if isinstance(error, StateUnavailable):
            return error
        return StateUnavailable(f"{self.what}: Redis unavailable: {error}")

    def ok(self) -> None:
        if self.down:
            logger.warning("corral: %s: Redis is back", self.what)
        self.down = False

    async def guard(self, call):
        """Await one Redis call (a coroutine) through the breaker: skipped at once while the breaker is
        open, and a failure becomes StateUnavailable (opening the breaker)."""
        try:
            self.check()
        except StateUnavailable:
            call.close()
            raise
        try:
            result = await call
        except Exception as e:
            raise self.failed(e) from e
        self.ok()
        return result


class StateUnavailable(Exception):
    """Shared state could not be read or written (Redis down, timed out, or skipped by the breaker)."""


def note_degraded(flow: http.HTTPFlow, note: str) -> None:
    """Record on the flow that a feature ran without its shared state (``corral.state_degraded``)."""
    notes = flow.metadata.setdefault(md.STATE_DEGRADED, [])
    if note not in notes:
        notes.append(note)


class StateHeader:
    """Tells the client (and the record, via the response headers) that shared state was unavailable."""

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and flow.metadata.get(md.STATE_DEGRADED):
            flow.response.headers[STATE_HEADER] = "degraded"
