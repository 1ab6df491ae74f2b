"""RateLimitAccounting: the response-phase half of the rate limiter; sits after the Meter.

- Token windows were charged an estimate at admission; when the response (or stream) ends, the Meter
  has published the real ``corral.usage`` and the difference is charged (or given back).
- Adaptive mode: the provider's own rate-limit headers (addon/limits/adaptive.py) start a hold on
  that provider+credential, read in ``responseheaders`` so a stream's headers count at once.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from addon import metadata as md
from addon.limits.adaptive import hold_seconds
from addon.limits.config import actual_tokens
from addon.limits.limiter import LimitBook
from addon.state import StateUnavailable, note_degraded

logger = logging.getLogger(__name__)
WAIT_HEADER = "x-corral-ratelimit-wait-ms"


class RateLimitAccounting:
    def __init__(self, book: LimitBook) -> None:
        self.book = book

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        waited = flow.metadata.get(md.WAIT_MS)
        if waited is not None and flow.response is not None:
            # Tell the client its request was held by a queueing limit, and for how long.
            flow.response.headers[WAIT_HEADER] = str(round(waited))
        if not self.book.adaptive or flow.response is None or not _from_upstream(flow):
            return
        seconds = hold_seconds(flow.response.headers.items(multi=True), flow.response.status_code)
        if seconds:
            key = self.book.hold_key(flow)
            until = self.book.clock() + seconds
            if until > self.book.holds.get(key, 0):
                self.book.holds[key] = until
                logger.info(
                    "corral: %s says its rate limit is exhausted; holding its requests for %.1f s", key[0], seconds
                )

    async def response(self, flow: http.HTTPFlow) -> None:
        await self._correct(flow)

    async def error(self, flow: http.HTTPFlow) -> None:
        await self._correct(flow)

    async def _correct(self, flow: http.HTTPFlow) -> None:
        charges = self.book.charges.pop(flow.id, None)
        if not charges:
            return
        usage = flow.metadata.get(md.USAGE)
        for charge in charges:
            actual = actual_tokens(usage, charge.tokens)
            if actual is None or actual == charge.cost:
                continue  # unknown usage: the estimate stands
            try:
                await self.book.store.charge(charge.window, charge.key, actual - charge.cost)
            except StateUnavailable as e:
                note_degraded(flow, f"limits: {e}; token correction lost")
            except Exception:  # a storage hiccup must not cost the client its answer
                logger.exception("corral: could not correct the token window of %s", charge.window.limit)

    def done(self) -> None:
        self.book.charges.clear()


def _from_upstream(flow: http.HTTPFlow) -> bool:
    meta = flow.metadata
    if md.GATEWAY_ERROR in meta or meta.get(md.CACHE) == "hit" or md.PROVIDER not in meta:
        return False  # Corral's own answer or a replay: not the provider's current word
    attempts = meta.get(md.ATTEMPTS)
    if attempts and attempts[-1].get("status") is not None:
        return True  # answered by the retrier (relay, or inline without a server connection of mitmproxy's)
    return flow.server_conn is not None and flow.server_conn.timestamp_start is not None
