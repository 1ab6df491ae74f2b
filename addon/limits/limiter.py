"""RateLimiter: requests and tokens per second/minute/hour/day, per scope; reject or queue.

Placement (addon/chain.py): after CacheLookup (a hit never counts) and before the Retrier. Its partner
`RateLimitAccounting` sits after the Meter: a token window is charged with an estimate at admission
(request body bytes / 4) and corrected to the real usage when the response or stream ends, which is
only known after the Meter has published ``corral.usage``. Both share one `LimitBook`.

Waiting happens in an ``async def request`` hook with short sleeps, so only the held flow waits. Waiters
on one bucket are served first come, first served; a client that leaves while queued is killed
before anything goes upstream.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.connection import ConnectionState

from addon import config, metadata as md, netaddr
from addon.limits.config import Limit, LimitConfigError, Window, estimate_tokens, parse_limits
from addon.limits.store import LimitsStore, WindowStore
from addon.responses import make_error
from addon.services import CatalogService, SharedState
from addon.state import StateUnavailable, note_degraded
from providers.catalog import unknown_provider

logger = logging.getLogger(__name__)

STEP = 0.05  # longest single sleep of a queued flow: how fast it notices a departed client
TENANT_HEADER = "x-corral-tenant"
MAX_SEEN = 1000  # bucket keys remembered per limit for `corral limits`
LIMITS_ENDPOINT = "/limits"


@dataclasses.dataclass
class Charge:
    window: Window
    key: str
    cost: int
    tokens: str  # the limit's token kind, for the correction


@dataclasses.dataclass
class Blocked:
    limit: Limit
    window: Window | None  # None: held by queue order or by an adaptive hold
    key: str
    wait: float


class LimitBook:
    """State shared by RateLimiter (admission) and RateLimitAccounting (corrections, adaptive holds)."""

    def __init__(self) -> None:
        self.limits: list[Limit] = []
        self.store: WindowStore = LimitsStore()
        self.state_url = "memory://"  # the [state] url the store was made for
        self.tenant_header = False
        self.adaptive = False
        self.adaptive_max_wait = 30.0
        self.charges: dict[str, list[Charge]] = {}
        self.queues: dict[tuple[str, str], collections.deque[str]] = collections.defaultdict(collections.deque)
        self.holds: dict[tuple[str, str], float] = {}  # (provider, credential) -> epoch the hold ends
        self.clock: Callable[[], float] = time.time  # epoch seconds, for the holds
        self.seen: dict[str, collections.OrderedDict[str, None]] = collections.defaultdict(collections.OrderedDict)

    def hold_key(self, flow: http.HTTPFlow) -> tuple[str, str]:
        return (flow.metadata.get(md.PROVIDER) or "", flow.metadata.get(md.CREDENTIAL) or "-")

    def remember(self, limit: Limit, key: str) -> None:
        seen = self.seen[limit.name]
        seen[key] = None
        seen.move_to_end(key)
        while len(seen) > MAX_SEEN:
            seen.popitem(last=False)


def _adaptive_limit(provider: str) -> Limit:
    return Limit(name=f"adaptive:{provider}", windows=(), behaviour="queue")


class RateLimiter:
    def __init__(self, book: LimitBook, shared_state: SharedState, catalog: CatalogService | None = None) -> None:
        self.book = book
        self.catalog = catalog  # provider names a [[limits]] rule may use
        self.shared_state = shared_state  # [state]: where the windows live, and on_failure
        # How long a flow was held is measured and waited on through these two (tests use a fake clock).
        self.clock: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

    def load(self, loader) -> None:
        loader.add_option("corral_limits", str, "", "JSON of corral.toml's [[limits]] tables (a list).")
        loader.add_option(
            "corral_limits_settings_tenant_header", bool, False,
            "Trust the client's x-corral-tenant header as its tenant for per = \"tenant\" limits "
            "(else the tenant is the credential fingerprint).",
        )
        loader.add_option(
            "corral_limits_settings_adaptive", bool, False,
            "Hold requests to a provider+credential while the provider's own rate-limit headers say it is exhausted.",
        )
        loader.add_option(
            "corral_limits_settings_adaptive_max_wait", float, 30.0,
            "Longest an adaptive hold queues a request; a longer hold is answered 429 at once.",
        )

    def configure(self, updated: set[str]) -> None:
        book = self.book
        if "corral_limits" in updated:
            try:
                book.limits = parse_limits(config.parse_json_option("corral_limits", ctx.options.corral_limits))
            except LimitConfigError as e:
                raise exceptions.OptionsError(f"[[limits]]: {e}") from None
        if self.catalog is not None and ({"corral_limits", "corral_providers"} & updated):
            known = self.catalog.current.names()
            for limit in book.limits:
                for name in limit.providers:
                    if name not in known:
                        raise exceptions.OptionsError(
                            unknown_provider(f"[[limits]] {limit.name!r} provider", name, known)
                        )
        url = self.shared_state.url
        if "corral_state_url" in updated and url != book.state_url:
            try:
                book.store = LimitsStore(url)
            except Exception as e:  # unknown scheme, missing driver: say so at start, not per request
                raise exceptions.OptionsError(f"[state] url: {e}") from None
            book.state_url = url
        book.tenant_header = ctx.options.corral_limits_settings_tenant_header
        book.adaptive = ctx.options.corral_limits_settings_adaptive
        if ctx.options.corral_limits_settings_adaptive_max_wait < 0:
            raise exceptions.OptionsError("[limits_settings] adaptive_max_wait: expected seconds >= 0, "
                                          f"got {ctx.options.corral_limits_settings_adaptive_max_wait}")
        book.adaptive_max_wait = ctx.options.corral_limits_settings_adaptive_max_wait

    # --- /_corral/limits ------------------------------------------------------------------------

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get(md.INTERNAL) != LIMITS_ENDPOINT or flow.response is not None:
            return
        peer = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        if not netaddr.is_loopback(peer):
            flow.response = http.Response.make(
                403, b'{"error": "corral: loopback only"}', {"content-type": "application/json"}
            )
            return
        try:
            report = await snapshot(self.book)
        except StateUnavailable as e:
            flow.response = http.Response.make(
                503, json.dumps({"error": f"corral: {e}"}), {"content-type": "application/json"}
            )
            return
        flow.response = http.Response.make(200, json.dumps(report, indent=1), {"content-type": "application/json"})

    # --- admission ------------------------------------------------------------------------------

    def _scope(self, flow: http.HTTPFlow) -> dict[str, str | None]:
        meta = flow.metadata
        tenant = None
        if self.book.tenant_header:
            tenant = (flow.request.headers.get(TENANT_HEADER) or "").strip()[:128] or None
            if tenant:
                meta[md.TENANT] = tenant
        return {
            "credential": meta.get(md.CREDENTIAL),
            "tenant": tenant or meta.get(md.CREDENTIAL),
            "provider": meta.get(md.PROVIDER),
            "model": meta.get(md.MODEL),
        }

    async def request(self, flow: http.HTTPFlow) -> None:
        meta = flow.metadata
        if flow.response is not None or md.PROVIDER not in meta or md.ROUTE_ERROR in meta or flow.error:
            return
        if meta.get(md.CACHE) == "hit" or meta.get(md.FIXTURE) == "replayed":  # a paced replay: no quota spent
            return
        book = self.book
        scope = self._scope(flow)
        buckets = [(lim, lim.bucket_key(scope)) for lim in book.limits
                   if lim.applies(meta.get(md.PROVIDER), meta.get(md.MODEL))]
        if not buckets and not (book.adaptive and book.holds):
            return
        body = flow.request.raw_content
        costs = {id(w): (1 if w.what == "requests" else estimate_tokens(body, lim.tokens))
                 for lim, _ in buckets for w in lim.windows}
        started = self.clock()
        started_ns = time.time_ns()
        deadline = math.inf
        joined: list[tuple[str, str]] = []
        slept = False
        try:
            while True:
                blocked = await self._blocked(flow, buckets, costs)
                if not blocked:
                    lost = await self._admit(flow, buckets, costs)
                    if lost is None:
                        return
                    blocked = [lost]  # another gateway took the last slot in between: treated as full
                now = self.clock()
                for b in blocked:
                    if b.limit.behaviour == "reject" or b.wait == math.inf:
                        self._reject(flow, b, started)
                        return
                    deadline = min(deadline, started + b.limit.max_wait)
                    qkey = (b.limit.name, b.key)
                    if b.window is not None and qkey not in joined:
                        book.queues[qkey].append(flow.id)
                        joined.append(qkey)
                worst = max(blocked, key=lambda b: b.wait)
                if now + worst.wait > deadline + 0.001 or now >= deadline:
                    self._reject(flow, worst, started)
                    return
                if self._client_gone(flow):
                    self._drop(flow, started)
                    return
                slept = True
                await self.sleep(min(STEP, max(worst.wait, 0.005)))
        except StateUnavailable as e:
            self._degraded(flow, e)
        finally:
            for qkey in joined:
                queue = book.queues.get(qkey)
                if queue is not None:
                    try:
                        queue.remove(flow.id)
                    except ValueError:
                        pass
                    if not queue:
                        book.queues.pop(qkey, None)
            if slept:
                held = self.clock() - started
                meta[md.WAIT_MS] = round(held * 1000, 2)
                # Epoch start, and the end the limiter's own clock measured: the span is the wait.
                meta[md.WAIT_AT] = [started_ns, started_ns + round(held * 1e9)]

    async def _blocked(
        self, flow: http.HTTPFlow, buckets: list[tuple[Limit, str]], costs: dict[int, int]
    ) -> list[Blocked]:
        book = self.book
        blocked: list[Blocked] = []
        if book.adaptive:
            until = book.holds.get(book.hold_key(flow))
            if until is not None:
                left = until - book.clock()
                if left > 0:
                    limit = _adaptive_limit(flow.metadata.get(md.PROVIDER) or "")
                    limit = dataclasses.replace(limit, max_wait=book.adaptive_max_wait)
                    blocked.append(Blocked(limit, None, "", left))
                else:
                    book.holds.pop(book.hold_key(flow), None)
        for limit, key in buckets:
            queue = book.queues.get((limit.name, key))
            if queue and queue[0] != flow.id:
                # Someone came first: wait behind them even if a slot is free right now.
                blocked.append(Blocked(limit, limit.windows[0], key, STEP))
                continue
            for window in limit.windows:
                cost = costs[id(window)]
                if not await book.store.fits(window, key, max(1, cost)):
                    wait = await book.store.wait_time(window, key, max(1, cost))
                    blocked.append(Blocked(limit, window, key, wait))
        return blocked

    async def _admit(
        self, flow: http.HTTPFlow, buckets: list[tuple[Limit, str]], costs: dict[int, int]
    ) -> Blocked | None:
        """Charge every window atomically (all or nothing); the window that filled up since ``_blocked``, if any."""
        owners = [(limit, window, key) for limit, key in buckets for window in limit.windows]
        full = await self.book.store.admit([(w, k, costs[id(w)]) for _l, w, k in owners]) if owners else None
        if full is not None:
            limit, window, key = owners[full]
            wait = await self.book.store.wait_time(window, key, max(1, costs[id(window)]))
            return Blocked(limit, window, key, max(wait, STEP))
        charges: list[Charge] = []
        for limit, key in buckets:
            self.book.remember(limit, key)
            for window in limit.windows:
                if window.what == "tokens":
                    charges.append(Charge(window, key, costs[id(window)], limit.tokens))
        if buckets:
            flow.metadata[md.RATELIMIT] = [limit.name for limit, _ in buckets]
        if charges:
            self.book.charges[flow.id] = charges
        return None

    def _degraded(self, flow: http.HTTPFlow, error: StateUnavailable) -> None:
        """The shared window store is unreachable: ``[state] on_failure`` decides (documented in addon/state.py)."""
        if self.shared_state.on_failure == "closed":
            note_degraded(flow, f"limits: {error}; request refused (on_failure = closed)")
            flow.response = make_error(flow, 503, "corral: rate-limit state unavailable; retry shortly",
                                       "state_unavailable", {"retry-after": "1"})
        else:
            note_degraded(flow, f"limits: {error}; request passed uncounted (on_failure = open)")

    @staticmethod
    def _client_gone(flow: http.HTTPFlow) -> bool:
        return flow.error is not None or not (flow.client_conn.state & ConnectionState.CAN_READ)

    def _drop(self, flow: http.HTTPFlow, started: float) -> None:
        flow.metadata[md.GATEWAY_ERROR] = "client disconnected while queued by corral; not sent upstream"
        if flow.killable:
            flow.kill()

    def _reject(self, flow: http.HTTPFlow, b: Blocked, started: float) -> None:
        horizon = b.wait if b.wait != math.inf else (b.window.item.get_expiry() if b.window else 60)
        retry = max(1, math.ceil(horizon))
        if b.window is None:
            what = f"provider {flow.metadata.get(md.PROVIDER)} reported its rate limit exhausted (adaptive)"
            amount, remaining = "0", "0"
        else:
            what = f"limit '{b.limit.name}' ({b.window.describe()})"
            amount, remaining = str(b.window.amount), "0"
            if b.wait == math.inf:
                what += ": this request alone needs more than the window allows"
        message = f"rate limited by corral: {what}; retry after {retry} s"
        headers = {
            "retry-after": str(retry),
            "x-corral-ratelimit-name": b.limit.name,
            "x-corral-ratelimit-limit": amount,
            "x-corral-ratelimit-remaining": remaining,
            "x-corral-ratelimit-reset": str(retry),
        }
        flow.response = make_error(flow, 429, message, "rate_limited", headers)


async def snapshot(book: LimitBook) -> dict:
    """Every configured limit with the current use of each bucket seen (for `corral limits`)."""
    out = []
    for limit in book.limits:
        buckets = []
        for key in reversed(book.seen.get(limit.name, {})):
            windows = []
            for window in limit.windows:
                used = await book.store.used(window, key)
                wait = await book.store.wait_time(window, key, 1)
                windows.append({"what": window.what, "period": window.period, "limit": window.amount,
                                "used": used, "full_for_s": round(wait, 2) if wait != math.inf else None})
            buckets.append({"key": key, "windows": windows,
                            "queued": len(book.queues.get((limit.name, key), ()))})
        out.append({
            "name": limit.name, "provider": list(limit.providers) or None, "model": list(limit.models) or None,
            "per": list(limit.per) or ["global"], "behaviour": limit.behaviour, "max_wait": limit.max_wait,
            "tokens": limit.tokens, "windows": [w.describe() for w in limit.windows], "buckets": buckets,
        })
    now = book.clock()
    holds = [{"provider": p, "credential": c, "for_s": round(until - now, 2)}
             for (p, c), until in book.holds.items() if until > now]
    return {"state": book.state_url, "adaptive": book.adaptive, "limits": out, "holds": holds}
