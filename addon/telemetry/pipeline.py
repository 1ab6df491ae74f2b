"""The OpenTelemetry SDK pipeline: tracer provider, bounded batch processor, OTLP exporter.

Imported only when telemetry is on: the SDK and the exporters (protobuf, requests) cost ~100 ms of
start-up and memory a gateway without a collector should not pay. Nothing here runs on the event
loop but ``on_end``, which appends to the processor's bounded queue; the export (and its retries)
happens on the processor's own thread. When the collector is down the queue fills and spans are
dropped, never queued without bound, and both kinds of loss are counted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

logger = logging.getLogger(__name__)

SHUTDOWN_WAIT_MS = 2000  # at `done`: how long the last spans may take to leave


@dataclasses.dataclass(frozen=True)
class Settings:
    endpoint: str  # "" with OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT set: the exporter reads the environment
    protocol: str
    headers: dict[str, str]
    service_name: str
    sample_ratio: float
    queue_size: int
    metrics: bool = False  # also gen_ai.client.* histograms over OTLP


class Counts:
    """Spans exported and dropped; updated from the event loop and the export thread."""

    def __init__(self, on_change: Callable[[str, int], None] | None = None) -> None:
        self.lock = threading.Lock()
        self.queued = 0
        self.exported = 0
        self.dropped = 0
        self.on_change = on_change  # ("exported" | "dropped", n): Prometheus counters

    def add(self, kind: str, n: int) -> None:
        with self.lock:
            setattr(self, kind, getattr(self, kind) + n)
        if self.on_change is not None:
            self.on_change(kind, n)


class CountingExporter(SpanExporter):
    """Counts what leaves the queue: exported, or dropped when the collector refused or was away."""

    def __init__(self, inner: SpanExporter, counts: Counts) -> None:
        self.inner = inner
        self.counts = counts
        self.failing = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.counts.lock:
            self.counts.queued -= len(spans)
        try:
            result = self.inner.export(spans)
        except Exception as e:  # the batch thread logs and forgets; count it first
            logger.warning("telemetry: export failed: %s", e)
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.counts.add("exported", len(spans))
            if self.failing:
                logger.info("telemetry: the collector takes spans again")
            self.failing = False
        else:
            self.counts.add("dropped", len(spans))
            if not self.failing:
                logger.warning("telemetry: the collector did not take %d spans; dropping until it does", len(spans))
            self.failing = True
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingBatchProcessor(BatchSpanProcessor):
    """BatchSpanProcessor that counts the spans its full queue pushes out (the SDK only logs them)."""

    def __init__(self, exporter: CountingExporter, queue_size: int) -> None:
        super().__init__(exporter, max_queue_size=queue_size, max_export_batch_size=min(512, queue_size))
        self.counts = exporter.counts
        self.queue_size = queue_size

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None or not span.context.trace_flags.sampled:
            return
        full = False
        with self.counts.lock:
            if self.counts.queued >= self.queue_size:
                full = True  # the queue pushes its oldest span out to take this one
            else:
                self.counts.queued += 1
        if full:
            self.counts.add("dropped", 1)
        super().on_end(span)

    def stop(self, timeout_ms: int) -> None:
        """shutdown() with a bounded wait: BatchSpanProcessor.shutdown() waits up to 30 s for a
        collector that may be down."""
        inner = getattr(self, "_batch_processor", None)
        if inner is not None and hasattr(inner, "shutdown"):
            inner.shutdown(timeout_millis=timeout_ms)
        else:
            self.shutdown()


def make_exporter(settings: Settings) -> SpanExporter:
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=settings.endpoint or None, headers=settings.headers or None)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=traces_url(settings.endpoint) if settings.endpoint else None,
                            headers=settings.headers or None)


def traces_url(endpoint: str, signal: str = "traces") -> str:
    """``[telemetry] otlp_endpoint`` is the collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is:
    the signal's path is added unless the URL already names one."""
    base = endpoint.rstrip("/")
    for known in ("/v1/traces", "/v1/metrics"):
        base = base.removesuffix(known)
    return f"{base}/v1/{signal}"


# Bucket boundaries the GenAI semantic conventions advise for these two histograms.
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]


class GenAIMetrics:
    """gen_ai.client.token.usage and gen_ai.client.operation.duration, exported periodically
    (OTEL_METRIC_EXPORT_INTERVAL, 60 s) by the SDK's reader thread."""

    def __init__(self, settings: Settings, resource: Resource) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader

        exporter: MetricExporter
        if settings.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics

            exporter = GrpcMetrics(endpoint=settings.endpoint or None, headers=settings.headers or None)
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter(
                endpoint=traces_url(settings.endpoint, "metrics") if settings.endpoint else None,
                headers=settings.headers or None)
        self.provider = MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(exporter)])
        meter = self.provider.get_meter("corral")
        self.tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}",
                                             description="Tokens used per operation, by gen_ai.token.type",
                                             explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        self.duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s",
                                               description="Duration of GenAI operations through the gateway",
                                               explicit_bucket_boundaries_advisory=DURATION_BUCKETS)

    def record(self, seconds: float, input_tokens: int | None, output_tokens: int | None,
               attributes: dict[str, Any]) -> None:
        self.duration.record(seconds, attributes)
        if input_tokens is not None:
            self.tokens.record(input_tokens, {**attributes, "gen_ai.token.type": "input"})
        if output_tokens is not None:
            self.tokens.record(output_tokens, {**attributes, "gen_ai.token.type": "output"})


class Pipeline:
    """One tracer provider with its processor; replaced as a whole when the settings change."""

    def __init__(self, settings: Settings, counts: Counts) -> None:
        self.settings = settings
        self.counts = counts
        resource = Resource.create({"service.name": settings.service_name})
        sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
        self.provider = TracerProvider(resource=resource, sampler=sampler)
        self.processor = CountingBatchProcessor(CountingExporter(make_exporter(settings), counts), settings.queue_size)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("corral")
        self.metrics = GenAIMetrics(settings, resource) if settings.metrics else None

    def shutdown(self, background: bool) -> None:
        """Flush what is queued (bounded wait) and stop the export thread; in a thread of its own when
        the event loop must not wait for a collector that may be down (a configuration change)."""
        def stop() -> None:
            try:
                self.processor.stop(SHUTDOWN_WAIT_MS)
                if self.metrics is not None:
                    self.metrics.provider.shutdown(timeout_millis=SHUTDOWN_WAIT_MS)
            except Exception as e:
                logger.warning("telemetry: shutting down the exporter failed: %s", e)
        if background:
            threading.Thread(target=stop, name="corral-telemetry-stop", daemon=True).start()
        else:
            stop()


def env_endpoint() -> str:
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or ""


class Spans:
    """Starting, propagating and ending one flow's span: the only code touching the tracing API."""

    def __init__(self) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.trace = trace
        self.propagator = TraceContextTextMapPropagator()

    def start(self, pipeline: Pipeline, name: str, headers: Any, start_ns: int, attributes: dict[str, Any]) -> Any:
        """A CLIENT span (the gateway calls the provider), the child of the caller's ``traceparent``."""
        parent = self.propagator.extract(headers) if "traceparent" in headers else None
        return pipeline.tracer.start_span(name, context=parent, kind=self.trace.SpanKind.CLIENT,
                                          start_time=start_ns, attributes=attributes)

    def inject(self, span: Any, headers: Any) -> None:
        self.propagator.inject(headers, context=self.trace.set_span_in_context(span))

    def child(self, pipeline: Pipeline, parent: Any, name: str, start_ns: int, end_ns: int,
              attributes: dict[str, Any]) -> None:
        """A finished INTERNAL span under ``parent`` (a part of the flow Corral itself spent time on)."""
        span = pipeline.tracer.start_span(name, context=self.trace.set_span_in_context(parent),
                                          kind=self.trace.SpanKind.INTERNAL, start_time=start_ns,
                                          attributes=attributes)
        span.end(end_time=end_ns)

    def end(self, span: Any, attributes: dict[str, Any], error: str | None, first_token_ns: int | None,
            end_ns: int) -> None:
        span.set_attributes(attributes)
        if first_token_ns is not None:
            span.add_event("corral.first_token", timestamp=first_token_ns)
        if error is not None:
            span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, error))
        span.end(end_time=end_ns)
