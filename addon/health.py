"""Health: ``/_corral/health`` (liveness) and ``/_corral/ready`` (readiness) on the gateway's own port.

- ``GET /_corral/health``: 200 ``{"status": "ok"}`` whenever the event loop answers; for a liveness
  probe (restart the process when it stops answering).
- ``GET /_corral/ready``: 200 when the record database takes writes and the shared state store
  (``[state] url``) answers, else 503; for a readiness probe (send no traffic while it is 503).

Both are Corral's own endpoints (``corral.internal``), so they are never recorded as flows and never
counted in /metrics: a probe every few seconds must not fill the record or move the error rate.
The checks' error text (it may name a file or host) goes only to loopback clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import peewee
from mitmproxy import http

from addon import metadata as md, netaddr, state
from addon.services import SharedState
from addon.storage.models import database_proxy

logger = logging.getLogger(__name__)

HEALTH_ENDPOINT = "/health"
READY_ENDPOINT = "/ready"
CHECK_TIMEOUT = 3.0  # seconds a readiness check may take before it counts as failed


def database_writable() -> None:
    """Raise unless the record database would take a write now (runs on a worker thread)."""
    db = database_proxy.obj
    if db is None:
        raise RuntimeError("no record database is open")
    db.connect(reuse_if_open=True)
    if isinstance(db, peewee.PostgresqlDatabase):
        (read_only,) = db.execute_sql("SHOW transaction_read_only").fetchone()
        if read_only == "on":
            raise RuntimeError("the database is read-only")
        return
    # SQLite: take the write lock, write nothing, give it back. The empty DELETE is still a write to
    # SQLite: it fails on a read-only file, directory or connection, which BEGIN IMMEDIATE alone does not.
    db.execute_sql("BEGIN IMMEDIATE")
    try:
        db.execute_sql("DELETE FROM flows WHERE 0")
    finally:
        db.execute_sql("ROLLBACK")


class Health:
    def __init__(self, shared_state: SharedState) -> None:
        self.shared_state = shared_state  # [state] url: the store /ready pings
        self._redis: Any = None
        self._redis_url = ""

    def done(self) -> None:
        self._redis = None

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        endpoint = flow.metadata.get(md.INTERNAL)
        if endpoint not in (HEALTH_ENDPOINT, READY_ENDPOINT) or flow.response is not None:
            return
        if endpoint == HEALTH_ENDPOINT:
            flow.response = _json(200, {"status": "ok"})
            return
        checks = {"database": await self._check(asyncio.to_thread(database_writable)),
                  "state": await self._check(self._state_reachable())}
        ready = all(v == "ok" for v in checks.values())
        peer = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        if not netaddr.is_loopback(peer):
            checks = {k: "ok" if v == "ok" else "failed" for k, v in checks.items()}
        flow.response = _json(200 if ready else 503, {"status": "ready" if ready else "not ready", "checks": checks})

    async def _check(self, call: Any) -> str:
        try:
            await asyncio.wait_for(call, CHECK_TIMEOUT)
        except TimeoutError:
            return f"failed: no answer within {CHECK_TIMEOUT:.0f} s"
        except Exception as e:
            return f"failed: {e}"[:300]
        return "ok"

    async def _state_reachable(self) -> None:
        url = self.shared_state.url
        if not state.is_redis(url):
            return  # memory://: this process is the store
        if self._redis is None or self._redis_url != url:
            self._redis, self._redis_url = state.async_client(url), url
        await self._redis.ping()


def _json(status: int, body: dict[str, Any]) -> http.Response:
    return http.Response.make(status, json.dumps(body), {"content-type": "application/json",
                                                         "cache-control": "no-store"})
