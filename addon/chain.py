"""The addon chain, in order. Each addon reads only metadata written by the ones before it
(addon/metadata.py documents every key). ``Chain`` runs each hook through them in list order.

Target order as features land:
    ConfigFile, Router, CacheLookup, RateLimiter, Retrier, Meter, CacheStore, Recorder,
    Annotator (mitmweb comments), Viewer (web UI + JSON API), Metrics
- CacheLookup before RateLimiter: a hit never counts against a provider quota.
- Retrier before Meter: the meter parses only the final response the client gets.
- RateLimitAccounting right after Meter: token windows are corrected with the usage the Meter
  publishes at the end of a response or stream.
- CacheStore after Meter: it stores what the meter judged complete, and wraps the meter's stream tee
  to keep the chunks (with timings) that the client received.
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

from addon.annotate import Annotator
from addon.cache.lookup import CacheLookup
from addon.cache.store import CacheStore
from addon.config import ConfigFile
from addon.limits.accounting import RateLimitAccounting
from addon.limits.limiter import LimitBook, RateLimiter
from addon.meter import Meter
from addon.proxy_scope import ProxyScope
from addon.recorder import Recorder
from addon.relay.retrier import Retrier
from addon.router import Router
from addon.state import StateHeader
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

    Why: mitmproxy pays ~5 µs per top-level addon per event (a safecall context manager, a coroutine,
    two generators) and fires ~8 events per flow; 14 top-level addons cost ~0.3 ms of CPU per flow
    (bench: 210 vs 174 µs per event). Unlike mitmproxy's nesting (a ``-s`` script's ``addons`` list,
    one safecall for all), an exception in one addon's hook is logged as mitmproxy would and the
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
    router = Router()
    recorder = Recorder(router)
    cache = CacheLookup()
    metrics = Metrics()
    limits = LimitBook()  # shared by the limiter (admission) and its accounting (usage corrections)
    return [
        ConfigFile(),  # corral.toml -> options; first, so every later addon sees the file's values
        router,  # provider, mode, upstream rewrite; answers unknown routes itself
        ProxyScope(router),  # explicit proxy: intercept catalog hosts only, no open proxy, upstream CA
        cache,  # response cache: answers hits without upstream (before limits: hits are free)
        RateLimiter(limits),  # requests/tokens per window: 429 at once or queue; answers /_corral/limits
        Retrier(router),  # upstream attempts through the in-process relay: retries, timeouts, fallbacks
        Meter(),  # model, stream tee, usage, errors
        RateLimitAccounting(limits),  # after the Meter: corrects token windows to real usage; adaptive holds
        CacheStore(cache, recorder),  # keeps complete answers (after the meter judged them); x-corral-cache header
        StateHeader(),  # x-corral-state: degraded when Redis ([state] url) was unavailable for the flow
        recorder,  # one row per flow, written off the loop in batches
        Annotator(),  # mitmweb: flow.comment / flow.marked from what the recorder recorded
        Viewer(metrics),  # web UI, read-only JSON API and /metrics on [viewer] listen
        metrics,  # Prometheus counters from the flow's metadata; last, so it sees everything
    ]


def addon() -> Chain:
    """The whole chain as the one addon mitmproxy loads (``corral start`` and ``-s addon/corral.py``)."""
    return Chain(build())
