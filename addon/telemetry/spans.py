"""A finished flow's ``Record`` -> its spans as OTLP protobuf, in the export thread.

The flow span (CLIENT: the gateway calls the provider) and its children, each with the times recorded
where the work happened: one CLIENT span per upstream attempt (``corral.attempt_times``), the cache
lookup and the rate-limit wait (INTERNAL). Time to first token is an event on the flow span. The
bytes (addon/telemetry/encode.py) go to the SDK's own OTLP exporters (``hand_over``).
"""

from __future__ import annotations

from typing import Any

from addon import metadata as md
from addon.telemetry import attributes as attrs, encode
from addon.telemetry.context import new_span_id

# Span attributes the GenAI metrics carry (the conventions' metric attributes; never content or ids).
METRIC_ATTRIBUTES = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
                     "gen_ai.response.model", "server.address", "server.port", "error.type")
FIRST_TOKEN = "corral.first_token"


def _error(values: dict[str, Any]) -> str | None:
    error = values.get("error.type")
    return str(error) if error else None


class Builder:
    def __init__(self, resource: dict[str, Any], metrics: Any = None) -> None:
        self.resource = resource  # the Resource's attributes (service.name, telemetry.sdk.*)
        self.metrics = metrics  # addon.telemetry.pipeline.GenAIMetrics, or None

    def build(self, rec: attrs.Record) -> list[bytes]:
        """The record's spans (none when its trace is not sampled); its metrics recorded either way."""
        values = attrs.flow_attributes(rec)
        if self.metrics is not None:
            usage = rec.meta.get(md.USAGE) or {}
            self.metrics.record((rec.end_ns - rec.start_ns) / 1e9, usage.get("input_tokens"),
                                usage.get("output_tokens"),
                                {k: values[k] for k in METRIC_ATTRIBUTES if k in values})
        ids = rec.context
        if not ids.sampled:
            return []
        model = values.get("gen_ai.request.model")
        name = f"{values['gen_ai.operation.name']} {model}" if model else str(values["gen_ai.operation.name"])
        events = [(FIRST_TOKEN, rec.first_ns)] if rec.first_ns is not None and rec.meta.get(md.STREAM) else ()
        spans = [encode.span(ids.trace_id, ids.span_id, ids.parent_id, bool(ids.parent_id), ids.tracestate, name,
                             encode.KIND_CLIENT, rec.start_ns, rec.end_ns, values, _error(values), events)]
        for child_name, kind, start, end, child in self._children(rec):
            spans.append(encode.span(ids.trace_id, new_span_id(), ids.span_id, False, ids.tracestate, child_name,
                                     kind, start, end, child, _error(child)))
        return spans

    def request(self, spans: list[bytes]) -> encode.Encoded:
        return encode.Encoded(encode.request(self.resource, "corral", spans), len(spans))

    @staticmethod
    def _children(rec: attrs.Record) -> list[tuple[str, int, int, int, dict[str, Any]]]:
        meta = rec.meta
        out: list[tuple[str, int, int, int, dict[str, Any]]] = []
        if (at := meta.get(md.CACHE_LOOKUP_AT)) and meta.get(md.CACHE):
            out.append(("corral.cache.lookup", encode.KIND_INTERNAL, at[0], at[1], {"corral.cache": meta[md.CACHE]}))
        if at := meta.get(md.WAIT_AT):
            wait: dict[str, Any] = {"corral.ratelimit.wait_ms": meta.get(md.WAIT_MS) or 0.0}
            if meta.get(md.RATELIMIT):
                wait["corral.ratelimit.limits"] = [str(x) for x in meta[md.RATELIMIT]]
            out.append(("corral.ratelimit.wait", encode.KIND_INTERNAL, at[0], at[1], wait))
        attempts = meta.get(md.ATTEMPTS) or []
        times = meta.get(md.ATTEMPT_TIMES) or []
        last = len(attempts) - 1
        for i, (attempt, (start, end)) in enumerate(zip(attempts, times, strict=False)):
            if i == last and attempt.get("status") is not None and not attempt.get("error"):
                end = max(end, rec.end_ns)  # the answer passed on: its body streams until the flow ends
            if not end:
                continue  # still running when the flow ended (the client left): no end to show
            out.append((rec.method, encode.KIND_CLIENT, start, end, attrs.attempt_attributes(rec.method, attempt, i)))
        return out


def hand_over(exporter: Any) -> Any:
    """Make the SDK's OTLP span exporter send ``encode.Encoded`` bytes as they are. HTTP: its module's
    ``encode_spans`` passes them through; gRPC: ``_translate_data`` parses them into the request
    message its stub sends (parsing is C, the SDK's encoding is Python)."""
    module = __import__(type(exporter).__module__, fromlist=["encode_spans"])
    if hasattr(exporter, "_translate_data"):  # gRPC
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        translate = exporter._translate_data
        exporter._translate_data = lambda data: (ExportTraceServiceRequest.FromString(data.data)
                                                 if isinstance(data, encode.Encoded) else translate(data))
        return exporter
    original = getattr(module, "encode_spans", None)
    if original is None:
        raise RuntimeError(f"{module.__name__} has no encode_spans: an OpenTelemetry exporter Corral does not know")
    if not getattr(original, "corral_passes_bytes", False):
        def encode_spans(data: Any) -> Any:
            return data if isinstance(data, encode.Encoded) else original(data)

        encode_spans.corral_passes_bytes = True  # type: ignore[attr-defined]
        setattr(module, "encode_spans", encode_spans)  # noqa: B010 - a module global, replaced on purpose
    return exporter
