"""The OpenTelemetry SDK pipeline: tracer provider, bounded batch processor, OTLP exporter.

Imported only when telemetry is on: the SDK and the exporters (protobuf, requests) cost ~100 ms of
start-up and memory a gateway without a collector should not pay. Nothing here runs on the event
loop but ``emit``, which appends a flow's ``Record`` (plain values) to the SDK batch processor's
bounded queue; turning records into spans (addon/telemetry/spans.py), recording the GenAI metrics,
encoding and sending all happen on the processor's own thread. When the collector is down the queue
fills and records are dropped, never queued without bound, and their spans are counted as dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from addon import metadata as md
from addon.telemetry.context import ratio_bound_of
from addon.telemetry.spans import Builder, hand_over

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
    """Turns the records of a batch into spans and hands them to the OTLP exporter; counts what it
    takes (exported) and what it refuses or cannot reach (dropped)."""

    def __init__(self, inner: SpanExporter, counts: Counts, builder: Builder) -> None:
        self.inner = inner
        self.counts = counts
        self.builder = builder
        self.failing = False

    def export(self, records: Sequence[Any]) -> SpanExportResult:
        with self.counts.lock:
            self.counts.queued -= len(records)
        spans: list[bytes] = []
        for record in records:
            try:
                spans.extend(self.builder.build(record))
            except Exception:  # one odd flow must not cost the batch
                logger.exception("telemetry: a flow's spans could not be built")
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            result = self.inner.export(self.builder.request(spans))  # type: ignore[arg-type] # bytes, see hand_over
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


def span_count(record: Any) -> int:
    """How many spans a record becomes (for the drop count when the full queue pushes one out)."""
    if not record.context.sampled:
        return 0
    meta = record.meta
    return (1 + len(meta.get(md.ATTEMPT_TIMES) or ()) + (md.CACHE_LOOKUP_AT in meta) + (md.WAIT_AT in meta))


class CountingBatchProcessor(BatchSpanProcessor):
    """The SDK's batch processor (its thread, bounded queue and OTEL_BSP_* settings) carrying flow
    records instead of spans; counts what its full queue pushes out (the SDK only logs it)."""

    def __init__(self, exporter: CountingExporter, queue_size: int) -> None:
        super().__init__(exporter, max_queue_size=queue_size, max_export_batch_size=min(512, queue_size))
        self.counts = exporter.counts
        self.queue_size = queue_size

    def emit(self, record: Any) -> None:
        full = False
        with self.counts.lock:
            if self.counts.queued >= self.queue_size:
                full = True  # the queue pushes its oldest record out to take this one
            else:
                self.counts.queued += 1
        if full:
            self.counts.add("dropped", span_count(record))
        self._batch_processor.emit(record)

    def stop(self, timeout_ms: int) -> None:
        """shutdown() with a bounded wait: BatchSpanProcessor.shutdown() waits up to 30 s for a
        collector that may be down."""
        self._batch_processor.shutdown(timeout_millis=timeout_ms)


def make_exporter(settings: Settings) -> SpanExporter:
    """The SDK's OTLP exporter for the protocol, taking the bytes addon/telemetry/encode.py writes."""
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return hand_over(GrpcExporter(endpoint=settings.endpoint or None, headers=settings.headers or None))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return hand_over(OTLPSpanExporter(endpoint=traces_url(settings.endpoint) if settings.endpoint else None,
                                      headers=settings.headers or None))


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
        self.ratio_bound = ratio_bound_of(settings.sample_ratio)
        self.metrics = GenAIMetrics(settings, resource) if settings.metrics else None
        builder = Builder(dict(resource.attributes), self.metrics)
        self.processor = CountingBatchProcessor(CountingExporter(make_exporter(settings), counts, builder),
                                                settings.queue_size)

    def emit(self, record: Any) -> None:
        """A finished flow, from the event loop: queued when its trace is sampled or metrics are on."""
        if record.context.sampled or self.metrics is not None:
            self.processor.emit(record)

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
