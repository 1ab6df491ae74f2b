"""KeySpend: adds each recorded flow's cost to its gateway key's spend, so the next request of the key
is admitted against it before the recorder's batch reaches the database. After the Recorder, which
publishes the cost (``corral.cost_usd``); an unpriced flow with counted tokens adds ``[keys] unpriced_usd``."""

from __future__ import annotations

from mitmproxy import http

from addon import metadata as md
from addon.keys.book import KeyBook


class KeySpend:
    def __init__(self, book: KeyBook) -> None:
        self.book = book

    def response(self, flow: http.HTTPFlow) -> None:
        self._add(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._add(flow)

    def _add(self, flow: http.HTTPFlow) -> None:
        key_id = flow.metadata.get(md.GATEWAY_KEY)
        if key_id is None or not flow.metadata.get(md.RECORDED):
            return
        cost = flow.metadata.get(md.COST_USD)
        if cost is None:
            usage = flow.metadata.get(md.USAGE) or {}
            counted = usage.get("input_tokens") is not None or usage.get("output_tokens") is not None
            cost = self.book.unpriced_usd if counted else 0.0
        self.book.add_spend(key_id, flow.id, float(cost))
