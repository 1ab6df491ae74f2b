"""CPU cost of the unified endpoint's translations, in process: the bench's stream (8 text chunks, one
event per wire chunk, as bench/mock.py sends it) through the Meter's tee alone (the native pass-through,
both OpenAI's stream at /openai/ and Anthropic's at /anthropic/) and through the Meter's tee wrapped by
UnifiedResponse (the translated one), the stream translator alone, the request translation (OpenAI
body -> Anthropic body, as UnifiedRequest does it) and the non-streamed JSON answer's. The budget is
for what the translation adds: the unified stream and request over the same provider's native
pass-through (Anthropic's), <= 0.3 ms CPU; the line over OpenAI's native stream is printed too (it
adds the difference between the two providers' streams, which the Meter parses either way).
It also checks that the Meter parses the native stream only, once.

    .venv/bin/python -m bench.unified_stream [-n 3000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from mitmproxy.test import taddons, tflow

from addon import metadata as md
from addon.meter import Meter
from addon.request_info import read_request
from addon.unified.anthropic_request import to_anthropic
from addon.unified.anthropic_response import translate_whole
from addon.unified.anthropic_stream import AnthropicStreamTranslator
from addon.unified.response import UnifiedResponse
from bench.mock import anthropic_events, anthropic_json, sse_events
from providers.formats import get_family

BUDGET_MS = 0.3
MODEL = "bench-d0-n8"
REQUEST = {"model": f"anthropic/{MODEL}", "messages": [{"role": "user", "content": "Say hello."}],
           "max_tokens": 32, "stream": True, "stream_options": {"include_usage": True}}


def stream_flow(unified: bool, family: str | None = None):
    flow = tflow.tflow(resp=True)
    family = family or ("anthropic" if unified else "openai")
    flow.request.path = "/v1/messages" if family == "anthropic" else "/v1/chat/completions"
    flow.metadata.update({md.PROVIDER: family, md.FORMAT: family, md.MODE: "reverse"})
    if unified:
        flow.metadata[md.UNIFIED] = {"translate": "anthropic", "native_model": MODEL,
                                     "requested_model": f"anthropic/{MODEL}"}
        flow.metadata[md.UNIFIED_STREAM] = {"stream": True, "include_usage": True}
    flow.response.headers.clear()
    flow.response.headers.update({"content-type": "text/event-stream", "transfer-encoding": "chunked"})
    flow.response.content = None
    return flow


def per_call_ms(n: int, run: Callable[[], object], batches: int = 5) -> float:
    """The least CPU per call over a few batches: the box is shared, the least is the code's own."""
    for _ in range(min(n, 200)):
        run()
    best = float("inf")
    for _ in range(batches):
        start = time.process_time()
        for _ in range(n // batches):
            run()
        best = min(best, (time.process_time() - start) / (n // batches) * 1e3)
    return best


def per_flow_ms(n: int, make: Callable[[], object], run: Callable[[object], object], batches: int = 10) -> float:
    """``per_call_ms`` for work on a flow: the flows are made before each batch, off the clock (making a
    test flow costs more than what is measured, and subtracting it would add its noise)."""
    for _ in range(min(n, 200)):
        run(make())
    best = float("inf")
    for _ in range(batches):
        flows = [make() for _ in range(n // batches)]
        start = time.process_time()
        for flow in flows:
            run(flow)
        best = min(best, (time.process_time() - start) / len(flows) * 1e3)
    return best


def main(n: int) -> None:
    meter, unified = Meter(), UnifiedResponse()
    native_events = sse_events(MODEL, 8, include_usage=True)
    anthropic = anthropic_events(MODEL, 8)
    with taddons.context(meter):
        def through(events: list[bytes], wrap: bool, family: str | None = None) -> float:
            def run(flow) -> bytes:
                meter.responseheaders(flow)
                if wrap:
                    unified.responseheaders(flow)
                stream = flow.response.stream
                out = [stream(e) for e in events]
                out.append(stream(b""))
                meter.tees.pop(flow.id, None)
                return b"".join(b"".join(o) if isinstance(o, list) else o for o in out)
            return per_flow_ms(n, lambda: stream_flow(wrap, family), run)

        # The Meter's parser sees the native stream, once: count what it is fed on the translated path.
        flow = stream_flow(True)
        meter.responseheaders(flow)
        parser = meter.tees[flow.id].parser
        assert parser is not None
        fed: list[bytes] = []
        feed = parser.feed
        parser.feed = lambda data: (fed.append(data), feed(data))[1]  # type: ignore[method-assign]
        unified.responseheaders(flow)
        client = [flow.response.stream(e) for e in anthropic] + [flow.response.stream(b"")]
        meter.tees.pop(flow.id, None)
        assert b"".join(fed) == b"".join(anthropic), "the Meter's parser did not get the native stream once"
        assert b"chat.completion.chunk" in b"".join(b"".join(c) if isinstance(c, list) else c for c in client)
        print(f"Meter parser on the translated path: fed {len(b''.join(fed))} bytes = the native Anthropic stream "
              f"once ({len(fed)} feeds); the translated stream is never parsed")

        native = through(native_events, False)
        native_anthropic = through(anthropic, False, "anthropic")
        translated = through(anthropic, True)

    def translator() -> bytes:
        t = AnthropicStreamTranslator(include_usage=True)
        return b"".join([t.feed(e) for e in anthropic]) + t.finish_stream()
    alone = per_call_ms(n, translator)

    raw_request = json.dumps(REQUEST).encode()
    family = get_family("anthropic")
    native_request = tflow.tflow().request
    native_request.path = "/v1/messages"

    def request() -> None:
        body = json.loads(raw_request)
        native_request.content = json.dumps(to_anthropic(body, MODEL)).encode()
        read_request(family, native_request.path, native_request)
    req = per_call_ms(n, request)
    whole_body = anthropic_json(MODEL)
    whole = per_call_ms(n, lambda: translate_whole(200, whole_body))

    delta = translated - native_anthropic
    print(f"stream, native pass-through (Meter tee, OpenAI SSE, 12 events): {native * 1e3:7.1f} µs CPU per stream")
    print(f"stream, native pass-through (Meter tee, Anthropic SSE, 13 events): {native_anthropic * 1e3:7.1f} µs CPU "
          f"per stream")
    print(f"stream, unified (Meter tee + UnifiedResponse, Anthropic SSE, 13 events): {translated * 1e3:7.1f} µs CPU "
          f"per stream (+{delta * 1e3:.1f} µs over native Anthropic, +{(translated - native) * 1e3:.1f} µs over "
          f"native OpenAI)")
    print(f"  of which AnthropicStreamTranslator alone: {alone * 1e3:7.1f} µs CPU per stream")
    print(f"request translation (json.loads, to_anthropic, json.dumps, read_request): {req * 1e3:7.1f} µs CPU")
    print(f"non-streamed answer (translate_whole): {whole * 1e3:7.1f} µs CPU")
    total = delta + req
    print(f"unified over native OpenAI, in process (stream + request): {(translated - native + req) * 1e3:.1f} µs "
          f"CPU per request")
    print(f"unified over native, in process (stream + request, over the same provider's pass-through): "
          f"{total * 1e3:.1f} µs CPU per request (budget {BUDGET_MS * 1e3:.0f} µs: "
          f"{'PASS' if total <= BUDGET_MS else 'MISS'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3000, help="iterations per measurement")
    main(parser.parse_args().n)
