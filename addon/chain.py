"""The addon chain, in order: services first, then the addons that handle flows.

Services (addon/services.py, and the books two addons share) are built once in ``build()`` and handed
to the addons that use them; no addon reaches another addon. The ones with options sit in the chain
right after ConfigFile, so they are configured before any addon that reads them.

Each addon reads only metadata written by the ones before it (addon/metadata.py documents every key);
``Chain`` runs each hook through them in list order. Why this order:
- CacheLookup before RateLimiter: a hit never counts against a provider quota.
- Retrier before Meter: the meter parses only the final response the client gets.
- RateLimitAccounting right after Meter: token windows are corrected with the usage the Meter
  publishes at the end of a response or stream.
- FixturePlayer before CacheLookup and the limits: a replayed answer touches no cache, quota or provider.
- CacheStore and FixtureTaker after Meter: it stores what the meter judged complete, and wraps the meter's stream tee
  to keep the chunks (with timings) that the client received.
- UnifiedRequest right after the Router: the cache, limits, retries and meter see the native request.
- UnifiedResponse after the Recorder: the meter parses and the recorder keeps the native answer; its
  stream wrapper is outermost, so every tee before it sees native bytes.
- KeyCheck right after the Router and RequestGuard (it answers in the provider's shape) and before the
  cache and limits: a refused key costs nothing, and the provider credential is in place before anything
  goes upstream. KeySpend after the Recorder, whose cost it adds to the key's spend; BudgetAlerts after
  KeySpend, so the spend it checks includes the flow.
- Recorder after everything that writes metadata about the exchange; Annotator, Telemetry and Metrics
  after the Recorder, whose cost they show, trace and count.
docs/architecture.md draws the chain and the path of one request through the hooks.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import mitmproxy.addonmanager  # these imports define every hook in hooks.all_hooks
import mitmproxy.log
import mitmproxy.proxy.layers
import mitmproxy.proxy.server_hooks  # noqa: F401
from mitmproxy import exceptions, hooks
from prometheus_client import CollectorRegistry

from addon.annotate import Annotator
from addon.cache.backend import ResponseCache
from addon.cache.lookup import CacheLookup
from addon.cache.store import CacheStore
from addon.config import ConfigFile
from addon.config_reload import ConfigReload
from addon.fixtures.book import FixtureBook
from addon.fixtures.player import FixturePlayer
from addon.fixtures.taker import FixtureTaker
from addon.flow_count import FlowCounter
from addon.health import Health
from addon.internal_hosts import InternalHosts
from addon.keys.admin import KeyAdmin
from addon.keys.alerts import BudgetAlerts
from addon.keys.book import KeyBook
from addon.keys.check import KeyCheck
from addon.keys.spend import KeySpend
from addon.limits.accounting import RateLimitAccounting
from addon.limits.limiter import LimitBook, RateLimiter
from addon.local_capture import LocalCapture
from addon.meter import Meter
from addon.proxy_scope import ProxyScope
from addon.recorder import Recorder
from addon.relay.retrier import Retrier
from addon.request_guard import RequestGuard
from addon.router import Router
from addon.services import CatalogService, PricingService, SecretsService, SharedState
from addon.state import StateHeader
from addon.telemetry.tracing import Telemetry
from addon.unified.bedrock_sigv4 import BedrockSigner
from addon.unified.groups import GroupBook
from addon.unified.request import UnifiedRequest
from addon.unified.response import UnifiedResponse
from addon.viewer.metrics import Metrics
from addon.viewer.server import Viewer

logger = logging.getLogger(__name__)


class _Isolated:
    """Logs an addon's exception as mitmproxy's safecall does and lets the next addon run. A plain
    class, not @contextmanager: it is entered once per addon hook call of every flow."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, etype: Any, value: Any, tb: Any) -> bool:
        if etype is None or not issubclass(etype, Exception):
            return False
        if issubclass(etype, (exceptions.AddonHalt, exceptions.OptionsError)):
            return False
        logger.error("Addon error: %s", value, exc_info=(etype, value, tb))
        return True


_ISOLATED = _Isolated()


class Chain:
    """Corral's addons as *one* mitmproxy addon that runs each hook through them in order.

    Why one addon: mitmproxy's cost per event grows with the number of top-level addons, whether or not
    they have a hook for it (docs/decisions.md). Unlike mitmproxy's nesting (a ``-s`` script's ``addons``
    list, one safecall for all), an exception in one addon's hook is logged as mitmproxy would and the
    next addons still run, so e.g. the recorder still writes its row when an earlier addon failed.
    """

    name = "corral"

    def __init__(self, children: list[object]) -> None:
        self.children = children
        for hook in sorted(hooks.all_hooks):
            funcs = [f for f in (getattr(c, hook, None) for c in children) if callable(f)]
            if funcs:
                setattr(self, hook, self._dispatcher(hook, funcs))

    @staticmethod
    def _dispatcher(hook: str, funcs: list[Callable[..., Any]]) -> Callable[..., Any]:
        # mitmproxy calls load/configure synchronously: a hook stays sync unless some addon's is async.
        if any(inspect.iscoroutinefunction(f) for f in funcs):
            async def run_async(*args: Any) -> None:
                for func in funcs:
                    with _ISOLATED:
                        result = func(*args)
                        if result is not None and inspect.isawaitable(result):
                            await result
            run_async.__name__ = hook
            return run_async

        def run(*args: Any) -> None:
            for func in funcs:
                with _ISOLATED:
                    func(*args)
        run.__name__ = hook
        return run


def build() -> list[object]:
    # Services: one of each, handed to the addons that use them.
    catalog = CatalogService()  # providers in force ([providers], [gateway] intercept_hosts)
    pricing = PricingService(catalog)  # [prices] over genai-prices
    shared_state = SharedState()  # [state]: where limits and cache entries live
    limits = LimitBook()  # shared by the limiter (admission) and its accounting (usage corrections)
    cache = ResponseCache()  # the cache backend, shared by its lookup (reads) and its store (writes)
    fixtures = FixtureBook()  # the fixture set in force: the player answers from it, the taker records into it
    keys = KeyBook(pricing, shared_state)  # [keys], [budgets]: verified keys and budget ledgers (check and spend)
    groups = GroupBook(catalog)  # [models.<alias>]: the unified endpoint's model groups (router and retrier)
    key_admin = KeyAdmin()  # [keys] admin_token: who may change keys over the viewer's API
    registry = CollectorRegistry()  # Prometheus: Metrics counts into it, the Viewer serves it
    return [
        ConfigFile(),  # corral.toml -> options; first, so every later addon sees the file's values
        catalog, pricing, shared_state, groups,  # services with options: configured before the addons using them
        SecretsService(),  # [secrets]: more names redacted wherever a request is stored or shown
        keys, key_admin,
        ConfigReload(),  # corral.toml changed (polled, SIGHUP, POST /_corral/reload): options updated, or refused whole
        Router(catalog, groups),  # provider, mode, upstream rewrite; answers unknown routes itself
        UnifiedRequest(),  # /v1/chat/completions to a translated provider: the native request, before all else
        InternalHosts(),  # /_corral/*: 403 to a Host that does not name this machine (DNS rebinding)
        RequestGuard(),  # 431 header caps, 400 CR/LF/NUL in values, 508 loops; after the Router (error shape)
        KeyCheck(keys, catalog, groups),  # gateway keys: 401/403/429 budget, then the provider credential swapped in
        Health(shared_state),  # /_corral/health and /_corral/ready (never recorded)
        FlowCounter(),  # provider requests seen, for `corral run`'s "nothing went through" check: /_corral/flows
        LocalCapture(),  # `corral run --capture`: mitmproxy's local mode for single processes: /_corral/capture
        ProxyScope(catalog),  # explicit proxy: intercept catalog hosts only, no open proxy, upstream CA
        FixturePlayer(fixtures),  # record/replay fixtures: answers from the set, or marks what to record
        CacheLookup(cache, shared_state, catalog),  # answers hits without upstream (before limits: hits are free)
        RateLimiter(limits, shared_state, catalog),  # requests/tokens per window: 429 or queue; /_corral/limits
        BedrockSigner(),  # [unified] bedrock_sigv4: SigV4 on the final native request; after hits and limits
        Retrier(catalog, groups),  # upstream attempts through the in-process relay: retries, timeouts, fallbacks
        Meter(),  # model, stream tee, usage, errors
        RateLimitAccounting(limits),  # after the Meter: corrects token windows to real usage; adaptive holds
        CacheStore(cache, pricing),  # keeps complete answers (after the meter judged them); x-corral-cache header
        FixtureTaker(fixtures),  # after the Meter, like CacheStore: writes complete exchanges to the set
        StateHeader(),  # x-corral-state: degraded when Redis ([state] url) was unavailable for the flow
        Recorder(pricing),  # one row per flow, written off the loop in batches
        UnifiedResponse(),  # after the Recorder (and around every tee): the client's copy in OpenAI's shape
        KeySpend(keys),  # after the Recorder: a gateway key's spend grows by the cost it recorded
        BudgetAlerts(keys, registry),  # after KeySpend: thresholds of budgets crossed -> log, /metrics, webhook
        Telemetry(registry),  # [telemetry]: one OpenTelemetry span per flow over OTLP (after the Recorder: cost)
        Annotator(),  # mitmweb: flow.comment / flow.marked from what the recorder recorded
        Viewer(registry, key_admin),  # web UI, read-only JSON API and /metrics on [viewer] listen
        Metrics(registry),  # Prometheus counters from the flow's metadata; last, so it sees everything
    ]


def addon() -> Chain:
    """The whole chain as the one addon mitmproxy loads (``corral start`` and ``-s addon/corral.py``)."""
    return Chain(build())
