"""The addon chain, in order. Each addon reads only metadata written by the ones before it
(addon/metadata.py documents every key). mitmproxy runs each hook through the addons in list order.

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

from addon.annotate import Annotator
from addon.cache_lookup import CacheLookup
from addon.cache_store import CacheStore
from addon.config import ConfigFile
from addon.meter import Meter
from addon.metrics import Metrics
from addon.proxy_scope import ProxyScope
from addon.ratelimit_accounting import RateLimitAccounting
from addon.ratelimiter import LimitBook, RateLimiter
from addon.recorder import Recorder
from addon.retrier import Retrier
from addon.router import Router
from addon.state import StateHeader
from addon.viewer import Viewer


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
