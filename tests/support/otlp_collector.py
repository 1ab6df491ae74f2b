"""Real OTLP receivers on loopback: what a collector sees of the gateway's spans and metrics.

``OTLPCollector`` (OTLP/HTTP) decodes each ``POST /v1/traces`` / ``/v1/metrics`` body (protobuf, gzip or
not) with the OpenTelemetry protobuf definitions, as the OpenTelemetry Collector does, and keeps every
span as a plain dict for the test to check; ``status`` lets a test make it refuse (503).
``OTLPGrpcCollector`` is the same over gRPC: a grpcio server implementing opentelemetry-proto's
TraceService and MetricsService.
"""

from __future__ import annotations

import gzip
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.waiting import until


def value_of(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value_of(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def decode(body: bytes) -> list[dict[str, Any]]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for rs in request.resource_spans:
        resource = {kv.key: value_of(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append({
                    "name": s.name,
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "kind": s.kind,
                    "start_ns": s.start_time_unix_nano,
                    "end_ns": s.end_time_unix_nano,
                    "attributes": {kv.key: value_of(kv.value) for kv in s.attributes},
                    "events": [{"name": e.name, "time_ns": e.time_unix_nano} for e in s.events],
                    "status_code": s.status.code,
                    "status_message": s.status.message,
                    "resource": resource,
                    "scope": ss.scope.name,
                })
    return spans


def decode_metrics(body: bytes) -> list[dict[str, Any]]:
    """Histogram data points of an ExportMetricsServiceRequest: name, unit, attributes, count, sum."""
    request = ExportMetricsServiceRequest()
    request.ParseFromString(body)
    points = []
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.WhichOneof("data") != "histogram":
                    continue
                for dp in m.histogram.data_points:
                    points.append({"name": m.name, "unit": m.unit, "count": dp.count, "sum": dp.sum,
                                   "attributes": {kv.key: value_of(kv.value) for kv in dp.attributes}})
    return points


def traceparent() -> tuple[str, str, str]:
    """A caller's new trace: (trace id, its span id, the traceparent header naming them)."""
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent, f"00-{trace_id}-{parent}-01"


def split(spans: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """A flow's spans -> (the flow span, its children by name)."""
    ids = {s["span_id"] for s in spans}
    [top] = [s for s in spans if s["parent_span_id"] not in ids]
    children: dict[str, list[dict[str, Any]]] = {}
    for s in sorted(spans, key=lambda s: s["start_ns"]):
        if s is not top:
            assert s["parent_span_id"] == top["span_id"], s
            children.setdefault(s["name"], []).append(s)
    return top, children


class OTLPCollector:
    """Use as a context manager; ``url`` is the base URL to configure (``/v1/traces`` is the path)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []  # histogram points, as exported (cumulative)
        self.requests: list[dict[str, str]] = []  # headers of each export request
        self.status = 200
        # Set: every export request waits for this event before it is read (a collector that hangs).
        self.stall: threading.Event | None = None
        self.stalled = 0  # export requests that have waited on ``stall``
        self._lock = threading.Lock()
        self._serve()

    def _serve(self) -> None:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if (stall := collector.stall) is not None:
                    with collector._lock:
                        collector.stalled += 1
                    stall.wait(60)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                with collector._lock:
                    collector.requests.append({k.lower(): v for k, v in self.headers.items()})
                    status = collector.status
                    if status == 200 and self.path == "/v1/traces":
                        collector.spans.extend(decode(body))
                    if status == 200 and self.path == "/v1/metrics":
                        collector.metrics.extend(decode_metrics(body))
                known = self.path in ("/v1/traces", "/v1/metrics")
                response = ExportTraceServiceResponse() if self.path == "/v1/traces" else ExportMetricsServiceResponse()
                reply = response.SerializeToString() if status == 200 else b""
                self.send_response(status if known else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-collector", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, spans: list[dict[str, Any]], metrics: list[dict[str, Any]], headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(headers)
            self.spans.extend(spans)
            self.metrics.extend(metrics)

    def trace(self, trace_id: str, count: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:
        """The spans of trace ``trace_id`` once ``count`` of them arrived."""
        def found() -> list[dict[str, Any]]:
            with self._lock:
                spans = [s for s in self.spans if s["trace_id"] == trace_id]
            return spans if len(spans) >= count else []
        return until(found, timeout=timeout, message=f"no {count} spans of trace {trace_id} reached the collector")


class OTLPGrpcCollector(OTLPCollector):
    """The same receiver over OTLP/gRPC (``url`` is what ``otlp_endpoint`` takes with protocol grpc)."""

    def _serve(self) -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        collector = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
                collector.add(decode(request.SerializeToString()), [], dict(context.invocation_metadata()))
                return ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: ExportMetricsServiceRequest, context: Any) -> ExportMetricsServiceResponse:
                collector.add([], decode_metrics(request.SerializeToString()), dict(context.invocation_metadata()))
                return ExportMetricsServiceResponse()

        self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.grpc_server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.grpc_server)
        self.port = self.grpc_server.add_insecure_port("127.0.0.1:0")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Any:
        self.grpc_server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.grpc_server.stop(grace=None)
