"""The addon chain, in order. Each addon reads only metadata written by the ones before it
(addon/metadata.py documents every key). mitmproxy runs each hook through the addons in list order.

Target order as features land:
    ConfigFile, Router, CacheLookup, RateLimiter, Retrier, Meter, CacheStore, Recorder,
    Annotator (mitmweb comments), Viewer (web UI + JSON API), Metrics
- CacheLookup before RateLimiter: a hit never counts against a provider quota.
- Retrier before Meter: the meter parses only the final response the client gets.
- CacheStore after Meter: it stores what the meter judged complete, and wraps the meter's stream tee
  to keep the chunks (with timings) that the client received.
"""

from __future__ import annotations

from addon.config import ConfigFile
from addon.meter import Meter
from addon.recorder import Recorder
from addon.retrier import Retrier
from addon.router import Router


def build() -> list[object]:
    router = Router()
    return [
        ConfigFile(),  # corral.toml -> options; first, so every later addon sees the file's values
        router,  # provider, mode, upstream rewrite; answers unknown routes itself
        Retrier(router),  # upstream attempts through the in-process relay: retries, timeouts, fallbacks
        Meter(),  # model, stream tee, usage, errors
        Recorder(router),  # one row per flow, written off the loop in batches
    ]
