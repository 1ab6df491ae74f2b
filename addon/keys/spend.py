"""KeySpend: settles each admitted flow's budget reservation to what it really cost, after the Recorder
(which publishes ``corral.cost_usd``). The charge rule (addon/keys/store.py ``charge``): the exact cost;
an unpriced flow with counted tokens ``[keys] unpriced_per_1k`` per 1,000 tokens or ``unpriced_usd``; a
success without readable usage ``unpriced_usd``; refusals, errors before an answer and cache hits nothing."""

from __future__ import annotations

import logging

from mitmproxy import http

from addon.keys.book import KeyBook
from addon.state import StateUnavailable, note_degraded

logger = logging.getLogger(__name__)


class KeySpend:
    def __init__(self, book: KeyBook) -> None:
        self.book = book

    async def response(self, flow: http.HTTPFlow) -> None:
        await self._settle(flow)

    async def error(self, flow: http.HTTPFlow) -> None:
        await self._settle(flow)

    async def _settle(self, flow: http.HTTPFlow) -> None:
        try:
            await self.book.finished(flow)
        except StateUnavailable as e:
            note_degraded(flow, f"budgets: {e}; this flow's cost was not added to the shared budgets")
        except Exception:  # bookkeeping must never cost the client its answer
            logger.exception("corral: could not settle the budgets of a flow")
