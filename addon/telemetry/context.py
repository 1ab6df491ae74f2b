"""W3C trace context on the event loop: a flow's trace and span ids, its sampling decision, the
``traceparent`` it continues and the one it sends on.

Plain integers and strings, no OpenTelemetry object: the SDK's tracer, span and context objects cost
more per flow than the whole rest of the telemetry (bench/telemetry_overhead.py), so the loop only
decides ids and sampling, as the SDK's ``ParentBased(TraceIdRatioBased)`` sampler and random id
generator would, and the export thread builds the spans (addon/telemetry/spans.py).
"""

from __future__ import annotations

import random
import re
from typing import NamedTuple

# version-traceid-parentid-flags; a later version may add fields after these (W3C Trace Context, 4.3).
TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
SAMPLED = 0x01
TRACE_ID_LOW = (1 << 64) - 1


class SpanIds(NamedTuple):
    trace_id: int
    span_id: int
    parent_id: int  # 0: the flow starts its trace
    sampled: bool
    tracestate: str = ""  # the caller's, passed on unchanged

    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{SAMPLED if self.sampled else 0:02x}"


def parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of a valid header, else None (a new trace starts)."""
    if not value:
        return None
    m = TRACEPARENT.match(value.strip().lower())
    if m is None:
        return None
    version, trace, parent, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, parent_id = int(trace, 16), int(parent, 16)
    if not trace_id or not parent_id:
        return None
    return trace_id, parent_id, bool(int(flags, 16) & SAMPLED)


def new_span_id() -> int:
    return random.getrandbits(64) or 1


def start(traceparent: str | None, tracestate: str | None, ratio_bound: int) -> SpanIds:
    """The flow span's ids: the child of the caller's span when it sent a valid ``traceparent``
    (whose sampled flag decides), else a new trace kept when its id's low 64 bits fall under
    ``ratio_bound`` (``ratio_bound_of``)."""
    parent = parse_traceparent(traceparent)
    if parent is not None:
        trace_id, parent_id, sampled = parent
        return SpanIds(trace_id, new_span_id(), parent_id, sampled, tracestate or "")
    trace_id = random.getrandbits(128) or 1
    return SpanIds(trace_id, new_span_id(), 0, (trace_id & TRACE_ID_LOW) < ratio_bound)


def ratio_bound_of(ratio: float) -> int:
    """TraceIdRatioBased's bound: a trace is kept when its id's low 64 bits are below it."""
    return round(ratio * (TRACE_ID_LOW + 1))
