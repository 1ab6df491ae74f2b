"""Telemetry: one OpenTelemetry span per LLM flow (with a child per upstream attempt, cache lookup and
rate-limit wait), exported over OTLP ([telemetry] in corral.toml).

Off unless ``[telemetry] otlp_endpoint`` or the standard ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` is
set; off, it imports nothing of OpenTelemetry. At ``requestheaders`` the flow gets its span's ids and
start time (the child of the caller's ``traceparent``), so its context exists before the request goes
upstream (``propagate_upstream``); at ``response`` / ``error`` it hands a ``Record`` of the finished
flow (its metadata, written by every addon before this one: after the Recorder, the cost) to the export
thread, which builds the spans. The event loop never touches an OpenTelemetry object per flow.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

from mitmproxy import ctx, exceptions, http
from prometheus_client import CollectorRegistry, Counter

from addon import metadata as md
from addon.config import parse_json_option
from addon.telemetry import attributes as attrs, context

logger = logging.getLogger(__name__)

PROTOCOLS = ("http/protobuf", "grpc")
OPTIONS = frozenset({
    "corral_telemetry_otlp_endpoint", "corral_telemetry_protocol", "corral_telemetry_headers",
    "corral_telemetry_service_name", "corral_telemetry_sample_ratio", "corral_telemetry_queue_size",
    "corral_telemetry_metrics",
})


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class Open:
    """A flow between ``requestheaders`` and its end."""

    __slots__ = ("flow", "ids", "request_model", "start_ns")

    def __init__(self, flow: http.HTTPFlow, ids: context.SpanIds, start_ns: int) -> None:
        self.flow = flow  # for a span the shutdown ends: what the flow was until then
        self.ids = ids
        self.start_ns = start_ns
        self.request_model: str | None = None


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
        self.counts: Any = None
        self.open: dict[str, Open] = {}  # flow.id -> its span's ids and start
        self.propagate = False
        self.capture = False
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
        # Read per flow: kept here, as mitmproxy hands out a deep copy of an option at every read.
        self.propagate = ctx.options.corral_telemetry_propagate_upstream
        self.capture = ctx.options.corral_telemetry_capture_content
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
                raise exceptions.OptionsError("[telemetry] protocol = \"grpc\" needs the OTLP/gRPC exporter: "
                                              "pip install 'corral[otlp-grpc]'")
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
        pipeline = self.pipeline
        if pipeline is None or flow.id in self.open or not md.is_llm_flow(flow):
            return
        headers = flow.request.headers
        parent, state = attrs.header_values(headers.fields, b"traceparent", b"tracestate")
        ids = context.start(parent, state, pipeline.ratio_bound)
        self.open[flow.id] = Open(flow, ids, _ns(flow.request.timestamp_start or time.time()))
        if self.propagate and md.PROVIDER in flow.metadata:
            headers["traceparent"] = ids.traceparent()
            if ids.tracestate:
                headers["tracestate"] = ids.tracestate

    def request(self, flow: http.HTTPFlow) -> None:
        state = self.open.get(flow.id)
        if state is not None:
            state.request_model = flow.metadata.get(md.MODEL)  # the answer's model may replace it later

    def response(self, flow: http.HTTPFlow) -> None:
        self.finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.finish(flow)

    def done(self) -> None:
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is None:
            return
        now = time.time_ns()
        for state in self.open.values():  # flows cut by the shutdown
            req = state.flow.request
            pipeline.emit(attrs.Record(state.ids, req.path, req.method, dict(state.flow.metadata), state.start_ns,
                                       now, state.request_model, corral_error="gateway_shutdown"))
        self.open.clear()
        pipeline.shutdown(background=False)

    def finish(self, flow: http.HTTPFlow) -> None:
        """A snapshot of the finished flow for the export thread: the loop's whole share of the work."""
        state = self.open.pop(flow.id, None)
        if state is None or self.pipeline is None:
            return
        record = attrs.record(flow, state.ids, state.start_ns, state.request_model,
                              self.capture)
        self.pipeline.emit(record)
