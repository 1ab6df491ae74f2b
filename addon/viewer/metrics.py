"""Metrics: Prometheus counters and histograms from each flow's metadata, served by the Viewer at /metrics.

Last in the chain, so every other addon has published its metadata (usage, cache, retries, cost from
the Recorder) by the time a flow is counted, once, at ``response`` or ``error``. It counts into the
registry addon/chain.py hands to it and to the Viewer, not prometheus_client's global one, so several
gateways in one process never clash.
"""

from __future__ import annotations

import time

from mitmproxy import ctx, exceptions, http
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from addon import metadata as md

DEFAULT_MAX_LABEL_VALUES = 200
MAX_LABEL_LENGTH = 128  # characters of one label value; a client chooses the model name
OTHER = "other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def status_class(status: int | None) -> str:
    return f"{status // 100}xx" if status else "none"


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus text format, and its content type (for the Viewer's /metrics)."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


class LabelCap:
    """At most ``limit`` distinct values per label name; later new values are counted as ``other``.

    Model names come from clients: uncapped, 3,000 of them made /metrics 5 MB, and every Prometheus
    server scraping it keeps each series. The first ``limit`` values seen keep their own series.
    """

    def __init__(self, limit: int = DEFAULT_MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self.seen: dict[str, set[str]] = {}

    def __call__(self, label: str, value: str) -> str:
        value = value[:MAX_LABEL_LENGTH]
        seen = self.seen.setdefault(label, set())
        if value in seen:
            return value
        if len(seen) >= self.limit:
            return OTHER
        seen.add(value)
        return value


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.cap = LabelCap()
        r = registry
        self.requests = Counter(
            "corral_requests", "Flows handled", ["provider", "model", "status_class", "cache"], registry=r
        )
        self.tokens = Counter(
            "corral_tokens", "Tokens reported by providers", ["provider", "model", "kind"], registry=r
        )
        self.cost = Counter("corral_cost_usd", "Cost of priced flows in USD", ["provider", "model"], registry=r)
        self.saved = Counter("corral_cache_saved_usd", "Cost the cache saved in USD", ["provider"], registry=r)
        self.cache_hits = Counter("corral_cache_hits", "Answers served from the cache", ["provider"], registry=r)
        self.rate_limited = Counter(
            "corral_rate_limited", "Requests Corral refused with 429 (rate limits)", ["provider"], registry=r
        )
        self.upstream_errors = Counter("corral_upstream_errors", "Upstream failures: 5xx, 429, unreachable or broken",
                                       ["provider", "kind"], registry=r)
        self.ttfb = Histogram(
            "corral_ttfb_seconds", "Time to first response byte", ["provider"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.duration = Histogram(
            "corral_duration_seconds", "Request duration", ["provider"], buckets=LATENCY_BUCKETS, registry=r
        )

    def load(self, loader) -> None:
        loader.add_option(
            "corral_metrics_max_label_values", int, DEFAULT_MAX_LABEL_VALUES,
            "Distinct values /metrics keeps per label (e.g. model); later new ones are counted as 'other'.",
        )

    def configure(self, updated: set[str]) -> None:
        if "corral_metrics_max_label_values" in updated:
            if ctx.options.corral_metrics_max_label_values < 1:
                raise exceptions.OptionsError("[metrics] max_label_values must be at least 1")
            self.cap.limit = ctx.options.corral_metrics_max_label_values

    def response(self, flow: http.HTTPFlow) -> None:
        self.count(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.count(flow)

    def count(self, flow: http.HTTPFlow) -> None:
        meta = flow.metadata
        if not md.is_llm_flow(flow) or meta.get(md.METRICS_COUNTED):
            return
        meta[md.METRICS_COUNTED] = True
        provider = self.cap("provider", meta.get(md.PROVIDER) or "-")
        model = self.cap("model", str(meta.get(md.MODEL) or "-"))
        resp = flow.response
        status = resp.status_code if resp is not None else None
        unreachable = status is None and flow.error is not None and not md.client_went_away(flow)
        if resp is not None and resp.headers.get("x-corral-error") in ("upstream_unavailable", "upstream_timeout"):
            unreachable = True  # the retrier's 502/504 after every attempt failed to get a response
        if status is None and unreachable:
            status = 502  # what mitmproxy answered the client, as the record says too
        cache = meta.get(md.CACHE, "off")
        self.requests.labels(provider, model, status_class(status), cache).inc()
        usage = meta.get(md.USAGE) or {}
        for kind in ("input", "output", "cached_input", "reasoning"):
            value = usage.get(f"{kind}_tokens")
            if value:
                self.tokens.labels(provider, model, kind).inc(value)
        if meta.get(md.COST_USD):
            self.cost.labels(provider, model).inc(meta[md.COST_USD])
        if cache == "hit":
            self.cache_hits.labels(provider).inc()
            if meta.get(md.SAVED_COST_USD):
                self.saved.labels(provider).inc(meta[md.SAVED_COST_USD])
        gateway_error = meta.get(md.GATEWAY_ERROR)
        if status == 429 and gateway_error:
            self.rate_limited.labels(provider).inc()
        elif unreachable and md.ROUTE_ERROR not in meta:
            self.upstream_errors.labels(provider, "unreachable").inc()
        elif status is not None and (status >= 500 or status == 429) and cache != "hit":
            self.upstream_errors.labels(provider, "429" if status == 429 else "5xx").inc()
        elif flow.error is not None and meta.get(md.STREAM) and not md.client_went_away(flow):
            self.upstream_errors.labels(provider, "broken_stream").inc()
        started = flow.request.timestamp_start
        first = meta.get(md.FIRST_BYTE_AT) or (resp.timestamp_start if resp is not None else None)
        if first:
            self.ttfb.labels(provider).observe(max(0.0, first - started))
        end = (resp.timestamp_end if resp is not None and resp.timestamp_end else None) or time.time()
        self.duration.labels(provider).observe(max(0.0, end - started))
