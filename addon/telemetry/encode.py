"""OTLP trace protobuf, written directly: a flow's spans -> bytes of an ExportTraceServiceRequest.

The SDK's encoder builds a protobuf object per attribute and hashes the resource (a JSON dump) per
span: most of the CPU telemetry cost per flow (bench/telemetry_overhead.py). Here a span is a few
byte strings joined, and the attributes that repeat from flow to flow (provider, model, mode, status,
server) are encoded once and remembered. tests/unit/telemetry/test_encode.py checks the bytes decode
to what the SDK's encoder makes of the same spans.

Wire format: opentelemetry-proto's trace/v1/trace.proto and common/v1/common.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

KIND_INTERNAL, KIND_CLIENT = 1, 3
STATUS_ERROR = 2
# Span.flags: whether the parent is remote (SpanFlags in trace.proto), as the SDK's encoder sets them.
FLAG_HAS_IS_REMOTE, FLAG_IS_REMOTE = 0x100, 0x200
MEMO_LIMIT = 4096  # remembered attribute encodings; cleared when full (ids and counts never repeat much)

_fixed64 = struct.Struct("<Q").pack
_double = struct.Struct("<d").pack
_fixed32 = struct.Struct("<I").pack


_SMALL = [bytes((i,)) for i in range(0x80)]


def varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64  # int64 in two's complement: ten bytes
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len(field: int, data: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(field << 3 | 2) + varint(len(data)) + data


def any_value(value: Any) -> bytes:
    """An AnyValue message's body."""
    if isinstance(value, bool):  # before int: a bool is an int
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _len(1, value.encode("utf-8", "surrogatepass"))
    if isinstance(value, int):
        return b"\x18" + varint(value)
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, list | tuple):
        return _len(5, b"".join(_len(1, any_value(v)) for v in value))
    return _len(1, str(value).encode("utf-8", "surrogatepass"))


_memo: dict[tuple[str, type, Any], bytes] = {}


def _key_value(field: int, key: str, value: Any) -> bytes:
    """One attribute as a KeyValue field ``field`` of its message."""
    return _len(field, _len(1, key.encode()) + _len(2, any_value(value)))


def attributes(field: int, values: dict[str, Any]) -> bytes:
    """The KeyValue fields of ``values``. A span's (field 9) are remembered: most repeat."""
    if field != 9:
        return b"".join(_key_value(field, k, v) for k, v in values.items())
    memo = _memo
    parts = []
    for key, value in values.items():
        if isinstance(value, list):
            parts.append(_key_value(9, key, value))
            continue
        memo_key = (key, type(value), value)
        found = memo.get(memo_key)
        if found is None:
            if len(memo) >= MEMO_LIMIT:
                memo.clear()
            found = memo[memo_key] = _key_value(9, key, value)
        parts.append(found)
    return b"".join(parts)


def span(trace_id: int, span_id: int, parent_id: int, parent_remote: bool, tracestate: str, name: str,
         kind: int, start_ns: int, end_ns: int, values: dict[str, Any], error: str | None = None,
         events: Iterable[tuple[str, int]] = ()) -> bytes:
    """A Span message's body (sampled: only sampled spans are exported)."""
    parts = [b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id.to_bytes(8, "big")]
    if tracestate:
        parts.append(_len(3, tracestate.encode()))
    if parent_id:
        parts += (b"\x22\x08", parent_id.to_bytes(8, "big"))
    parts += (_len(5, name.encode("utf-8", "surrogatepass")), b"\x30", varint(kind),
              b"\x39", _fixed64(start_ns), b"\x41", _fixed64(end_ns), attributes(9, values))
    for event_name, at in events:
        parts.append(_len(11, b"\x09" + _fixed64(at) + _len(2, event_name.encode())))
    if error is not None:
        parts.append(_len(15, _len(2, error.encode("utf-8", "surrogatepass")) + b"\x18" + varint(STATUS_ERROR)))
    else:
        parts.append(b"\x7a\x00")  # an empty status (unset), as the SDK's encoder writes it
    flags = FLAG_HAS_IS_REMOTE | (FLAG_IS_REMOTE if parent_remote else 0)
    parts += (b"\x85\x01", _fixed32(flags))
    return b"".join(parts)


def request(resource: dict[str, Any], scope: str, spans: list[bytes]) -> bytes:
    """An ExportTraceServiceRequest with one resource and one scope holding ``spans``."""
    scope_spans = _len(1, _len(1, scope.encode())) + b"".join(_len(2, s) for s in spans)
    resource_spans = _len(1, attributes(1, resource)) + _len(2, scope_spans)
    return _len(1, resource_spans)


class Encoded:
    """Bytes of an ExportTraceServiceRequest where the SDK's exporters expect its message."""

    __slots__ = ("count", "data")

    def __init__(self, data: bytes, count: int) -> None:
        self.data = data
        self.count = count  # spans inside

    def __len__(self) -> int:
        return self.count

    def SerializePartialToString(self) -> bytes:
        return self.data

    SerializeToString = SerializePartialToString
