"""addon/telemetry/encode.py writes OTLP protobuf by hand: it must decode to exactly what the SDK's
own encoder makes of the same spans."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from addon.telemetry import encode

TRACE, SPAN, PARENT, CHILD = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 0x00F067AA0BA902B7, 0x1
VALUES = {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 12, "big": 1 << 62, "negative": -3,
          "corral.cost_usd": 0.00125, "corral.complete": True, "corral.stream": False, "utf8": "dragons 🐉",
          "gen_ai.response.finish_reasons": ["stop", "length"], "empty": ""}
RESOURCE = {"service.name": "corral", "telemetry.sdk.version": "1"}


def sdk_request(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(encode_spans(spans).SerializeToString())


def test_spans_decode_to_what_the_sdk_encodes() -> None:
    state = TraceState.from_header(["vendor=x"])
    flags = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(TRACE, SPAN, False, flags, state)
    resource, scope = Resource(RESOURCE), InstrumentationScope("corral")
    expected = sdk_request([
        ReadableSpan("chat gpt", context, SpanContext(TRACE, PARENT, True, flags, state), resource, VALUES,
                     [Event("corral.first_token", timestamp=15)], kind=SpanKind.CLIENT,
                     status=Status(StatusCode.ERROR, "503"), start_time=10, end_time=20, instrumentation_scope=scope),
        ReadableSpan("corral.cache.lookup", SpanContext(TRACE, CHILD, False, flags, state), context, resource,
                     {"corral.cache": "hit"}, kind=SpanKind.INTERNAL, start_time=11, end_time=12,
                     instrumentation_scope=scope),
    ])
    for _ in range(2):  # the second time from the remembered attribute encodings
        got = ExportTraceServiceRequest.FromString(encode.request(RESOURCE, "corral", [
            encode.span(TRACE, SPAN, PARENT, True, "vendor=x", "chat gpt", encode.KIND_CLIENT, 10, 20, VALUES,
                        "503", [("corral.first_token", 15)]),
            encode.span(TRACE, CHILD, SPAN, False, "vendor=x", "corral.cache.lookup", encode.KIND_INTERNAL, 11, 12,
                        {"corral.cache": "hit"}),
        ]))
        assert got == expected, f"{got}\n---\n{expected}"


def test_a_root_span_without_tracestate() -> None:
    context = SpanContext(TRACE, SPAN, False, TraceFlags(TraceFlags.SAMPLED))
    scope = InstrumentationScope("corral")
    expected = sdk_request([ReadableSpan("chat", context, None, Resource(RESOURCE), {"a": 1}, kind=SpanKind.CLIENT,
                                         start_time=1, end_time=2, instrumentation_scope=scope)])
    got = ExportTraceServiceRequest.FromString(
        encode.request(RESOURCE, "corral", [encode.span(TRACE, SPAN, 0, False, "", "chat", encode.KIND_CLIENT, 1, 2,
                                                        {"a": 1})]))
    assert got == expected, f"{got}\n---\n{expected}"


def test_varint() -> None:
    assert encode.varint(0) == b"\x00" and encode.varint(300) == b"\xac\x02"
    assert encode.varint(-1) == b"\xff" * 9 + b"\x01"
