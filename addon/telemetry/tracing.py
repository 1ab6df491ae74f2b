"""Telemetry: one OpenTelemetry span per LLM flow, exported over OTLP ([telemetry] in corral.toml).

Off unless ``[telemetry] otlp_endpoint`` or the standard ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` is
set; off, it imports nothing of OpenTelemetry. The span starts at ``requestheaders`` with the time the
request began (as the child of the caller's ``traceparent``), so its context exists before the request
goes upstream (``propagate_upstream``); it ends at ``response`` / ``error`` with the time the last byte
went, its attributes taken from the metadata of every addon before it (after the Recorder: the cost).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

from mitmproxy import ctx, exceptions, http
from prometheus_client import CollectorRegistry, Counter

from addon import metadata as md
from addon.config import parse_json_option
from addon.telemetry import attributes as attrs

logger = logging.getLogger(__name__)

PROTOCOLS = ("http/protobuf", "grpc")
OPTIONS = frozenset({
    "corral_telemetry_otlp_endpoint", "corral_telemetry_protocol", "corral_telemetry_headers",
    "corral_telemetry_service_name", "corral_telemetry_sample_ratio", "corral_telemetry_queue_size",
    "corral_telemetry_metrics",
})
# Span attributes the GenAI metrics carry (the conventions' metric attributes; never content or ids).
METRIC_ATTRIBUTES = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
                     "gen_ai.response.model", "server.address", "server.port", "error.type")


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def parse_headers(value: str) -> dict[str, str]:
    """``[telemetry] headers`` (a TOML table, so JSON here) or OTEL_EXPORTER_OTLP_HEADERS' ``k=v,k2=v2``."""
    if value.lstrip().startswith("{"):
        table = parse_json_option("corral_telemetry_headers", value)
        return {str(k): str(v) for k, v in table.items()}
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in value.split(","))):
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise exceptions.OptionsError(f"[telemetry] headers: expected a table or key=value pairs, got {item!r}")
        out[key.strip()] = val.strip()
    return out


class Telemetry:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.pipeline: Any = None  # addon.telemetry.pipeline.Pipeline when on
        self.spans_api: Any = None  # addon.telemetry.pipeline.Spans when on
        self.counts: Any = None
        self.spans: dict[str, Any] = {}  # flow.id -> its open span
        self.exported = Counter("corral_telemetry_spans_exported", "Spans the OTLP collector accepted",
                                registry=registry)
        self.dropped = Counter("corral_telemetry_spans_dropped",
                               "Spans dropped: the export queue was full, or the collector refused or was away",
                               registry=registry)

    def load(self, loader) -> None:
        loader.add_option(
            "corral_telemetry_otlp_endpoint", str, "",
            "OTLP collector base URL (http://collector:4318; /v1/traces is added). Empty: "
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, else telemetry is off.",
        )
        loader.add_option(
            "corral_telemetry_protocol", str, "",
            "OTLP protocol: http/protobuf or grpc (needs opentelemetry-exporter-otlp-proto-grpc). "
            "Empty: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf.",
        )
        loader.add_option(
            "corral_telemetry_headers", str, "",
            "Headers sent to the collector: a [telemetry.headers] table (JSON here) or key=value,... "
            "Empty: OTEL_EXPORTER_OTLP_HEADERS.",
        )
        loader.add_option(
            "corral_telemetry_service_name", str, "",
            "service.name of the spans. Empty: OTEL_SERVICE_NAME, else corral.",
        )
        loader.add_option(
            "corral_telemetry_sample_ratio", str, "1.0",
            "Share of traces kept (0..1); a caller's sampled/unsampled traceparent decides for its own.",
        )
        loader.add_option(
            "corral_telemetry_capture_content", bool, False,
            "Prompts and completions on the spans (gen_ai.input.messages, gen_ai.output.messages).",
        )
        loader.add_option(
            "corral_telemetry_propagate_upstream", bool, False,
            "Send the gateway span's traceparent/tracestate to the provider.",
        )
        loader.add_option(
            "corral_telemetry_metrics", bool, False,
            "Also export gen_ai.client.token.usage and gen_ai.client.operation.duration over OTLP "
            "(every OTEL_METRIC_EXPORT_INTERVAL ms, 60 s).",
        )
        loader.add_option(
            "corral_telemetry_queue_size", int, 2048,
            "Spans waiting for export at most; when the collector is down later ones push the oldest out "
            "(counted in corral_telemetry_spans_dropped_total).",
        )

    def configure(self, updated: set[str]) -> None:
        if not updated & OPTIONS:
            return
        settings = self._settings()
        if self.pipeline is not None and settings == self.pipeline.settings:
            return
        old, self.pipeline = self.pipeline, None
        if settings is not None:
            from addon.telemetry import pipeline  # the SDK: imported only when telemetry is on

            if self.counts is None:
                self.counts = pipeline.Counts(self._count)
                self.spans_api = pipeline.Spans()
            try:
                self.pipeline = pipeline.Pipeline(settings, self.counts)
            except Exception as e:  # a malformed endpoint URL, an exporter that cannot start
                self.pipeline = old
                raise exceptions.OptionsError(f"[telemetry]: {e}") from None
            where = settings.endpoint or pipeline.env_endpoint()
            logger.info("corral: traces to %s (%s)", where, settings.protocol)
        if old is not None:
            old.shutdown(background=True)  # spans it holds still leave, off the event loop

    def _settings(self) -> Any:
        opts = ctx.options
        endpoint = opts.corral_telemetry_otlp_endpoint.strip()
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        env = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if endpoint and not endpoint.startswith(("http://", "https://")):
            raise exceptions.OptionsError(f"[telemetry] otlp_endpoint: expected an http:// or https:// URL, "
                                          f"got {endpoint!r}")
        protocol = (opts.corral_telemetry_protocol or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
        if protocol not in PROTOCOLS:
            raise exceptions.OptionsError(f"[telemetry] protocol: expected one of {', '.join(PROTOCOLS)}, "
                                          f"got {protocol!r}")
        try:
            ratio = float(opts.corral_telemetry_sample_ratio)
        except ValueError:
            ratio = math.nan
        if not 0.0 <= ratio <= 1.0:
            raise exceptions.OptionsError(f"[telemetry] sample_ratio: expected a number from 0 to 1, "
                                          f"got {opts.corral_telemetry_sample_ratio!r}")
        if opts.corral_telemetry_queue_size < 1:
            raise exceptions.OptionsError("[telemetry] queue_size must be at least 1")
        headers = parse_headers(opts.corral_telemetry_headers)
        if not endpoint and not env:
            return None
        if protocol == "grpc":
            import importlib.util

            if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is None:
                raise exceptions.OptionsError("[telemetry] protocol = \"grpc\" needs the package "
                                              "opentelemetry-exporter-otlp-proto-grpc (pip install it)")
        from addon.telemetry.pipeline import Settings

        return Settings(endpoint=endpoint, protocol=protocol, headers=headers,
                        service_name=(opts.corral_telemetry_service_name or os.environ.get("OTEL_SERVICE_NAME")
                                      or "corral"),
                        sample_ratio=ratio, queue_size=opts.corral_telemetry_queue_size,
                        metrics=opts.corral_telemetry_metrics)

    def _count(self, kind: str, n: int) -> None:
        (self.exported if kind == "exported" else self.dropped).inc(n)

    # --- flows -----------------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self.pipeline is None or not md.is_llm_flow(flow) or flow.id in self.spans:
            return
        base = attrs.base_attributes(flow)
        span = self.spans_api.start(self.pipeline, str(base["gen_ai.operation.name"]), flow.request.headers,
                                    _ns(flow.request.timestamp_start or time.time()), base)
        self.spans[flow.id] = span
        if ctx.options.corral_telemetry_propagate_upstream and md.PROVIDER in flow.metadata:
            self.spans_api.inject(span, flow.request.headers)

    def request(self, flow: http.HTTPFlow) -> None:
        span = self.spans.get(flow.id)
        if span is None:
            return
        request = attrs.request_attributes(flow)
        span.set_attributes(request)
        if model := request.get("gen_ai.request.model"):
            span.update_name(f"{attrs.operation(flow.request.path)} {model}")  # the conventions' span name

    def response(self, flow: http.HTTPFlow) -> None:
        self.finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.finish(flow)

    def done(self) -> None:
        for flow_id in list(self.spans):
            span = self.spans.pop(flow_id)
            self.spans_api.end(span, {"error.type": "gateway_shutdown"}, "gateway shut down", None, _ns(time.time()))
        if self.pipeline is not None:
            self.pipeline.shutdown(background=False)
            self.pipeline = None

    def finish(self, flow: http.HTTPFlow) -> None:
        span = self.spans.pop(flow.id, None)
        if span is None:
            return
        try:
            values = attrs.response_attributes(flow)
            if ctx.options.corral_telemetry_capture_content:
                values.update(attrs.content_attributes(flow, self._request_json(flow)))
            first = flow.metadata.get(md.FIRST_BYTE_AT)
            first_ns = None
            if first and flow.metadata.get(md.STREAM):
                first_ns = _ns(first)
                values["gen_ai.response.time_to_first_chunk"] = max(0.0, first - flow.request.timestamp_start)
            resp = flow.response
            end = (resp.timestamp_end if resp is not None and resp.timestamp_end else None) or (
                flow.error.timestamp if flow.error is not None else None) or time.time()
            wait = flow.metadata.get(md.WAIT_MS)
            if wait and self.pipeline is not None:
                # The limiter holds the flow once its body is in, before it goes upstream.
                held_from = flow.request.timestamp_end or flow.request.timestamp_start
                self.spans_api.child(self.pipeline, span, "corral.ratelimit.wait", _ns(held_from),
                                     _ns(held_from + wait / 1000), {"corral.ratelimit.wait_ms": wait})
            if self.pipeline is not None and self.pipeline.metrics is not None:
                usage = flow.metadata.get(md.USAGE) or {}
                known = {**getattr(span, "attributes", {}), **values}
                self.pipeline.metrics.record(end - flow.request.timestamp_start, usage.get("input_tokens"),
                                             usage.get("output_tokens"),
                                             {k: known[k] for k in METRIC_ATTRIBUTES if k in known})
            error = values.get("error.type")
            self.spans_api.end(span, values, str(error) if error else None, first_ns, _ns(end))
        except Exception:
            span.end()  # a bug here must not leave the span open for ever
            raise

    @staticmethod
    def _request_json(flow: http.HTTPFlow) -> Any:
        raw = flow.request.raw_content
        if not raw or len(raw) > 8 * attrs.CONTENT_LIMIT or flow.request.headers.get("content-encoding"):
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None
