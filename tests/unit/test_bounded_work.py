"""Bounded work per response: compression bombs and endless streams cost at most the configured limits.

Memory is measured with tracemalloc around the one call under test (in process, no sockets): what
matters is the peak, which on an unbounded decoder is the whole inflated body.
"""

from __future__ import annotations

import functools
import json
import tracemalloc
import zlib
from collections.abc import Callable

import brotli
import pytest
from mitmproxy.test import taddons, tflow

from addon import metadata as md
from addon.decoding import TOO_LARGE, BoundedDecoder, decode_bounded, zstd
from addon.meter import Meter
from addon.recorder import _response_body
from addon.storage import db as dbmod, queries
from addon.storage.models import Flow, database_proxy
from providers.formats import get_family
from providers.formats.common import TextParts
from providers.formats.include_usage import UsageChunkStripper
from providers.formats.ndjson import NDJSONDecoder
from providers.formats.sse import SSEDecoder
from tests.support.reliability import reliability

MiB = 1 << 20
INFLATED = 64 * MiB


@functools.cache
def bomb(coding: str) -> bytes:
    """INFLATED bytes of zeros, compressed: a few hundred KB at most."""
    if coding == "gzip":
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        zero = bytes(MiB)
        return b"".join([c.compress(zero) for _ in range(INFLATED // MiB)] + [c.flush()])
    if coding == "br":
        return brotli.compress(bytes(INFLATED), quality=1)
    return zstd.compress(bytes(INFLATED), level=1)


def peak_of(fn: Callable[[], object]) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_decoding_a_bomb_stops_at_the_limit(coding: str) -> None:
    raw = bomb(coding)
    decoded, peak = peak_of(lambda: decode_bounded(raw, coding, 4 * MiB))
    assert decoded.too_large and decoded.data == bytes(4 * MiB)  # type: ignore[attr-defined]
    assert peak < 16 * MiB, f"{coding}: peak {peak / MiB:.1f} MiB decoding 64 MiB with a 4 MiB limit"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd", "identity"])
def test_bodies_within_the_limit_decode_as_mitmproxy_decodes_them(coding: str) -> None:
    from mitmproxy.net import encoding

    body = json.dumps({"text": "héllo " * 5000}).encode()
    raw = body if coding == "identity" else encoding.encode(body, coding)
    decoded = decode_bounded(raw, coding, len(body))
    assert decoded.data == body and not decoded.too_large and decoded.error is None


def test_raw_deflate_and_broken_bodies() -> None:
    raw = zlib.compress(b"plain deflate")[2:-4]  # no zlib header, as some servers send it
    assert decode_bounded(raw, "deflate", 100).data == b"plain deflate"
    broken = decode_bounded(b"not gzip at all", "gzip", 100)
    assert broken.error and broken.data == b""
    assert decode_bounded(b"x", "compress", 100).error == "unsupported content-encoding 'compress'"


def llm_flow(body: bytes, coding: str, content_type: str = "application/json"):
    flow = tflow.tflow(resp=True)
    flow.request.path = "/v1/chat/completions"
    flow.metadata.update({md.PROVIDER: "openai", md.FORMAT: "openai", md.MODE: "reverse"})
    flow.response.headers["content-type"] = content_type
    flow.response.headers["content-encoding"] = coding
    flow.response.raw_content = body
    return flow


@reliability(
    "upstream faults", "compression bomb (gzip/br/zstd answer inflating to 64 MiB, parse_limit 4 MiB)",
    "bytes unchanged", "row with parse_error 'response too large to decode'; memory stays near the limit",
)
@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
async def test_meter_does_not_inflate_a_compression_bomb(coding: str) -> None:
    meter = Meter()
    with taddons.context(meter) as tctx:
        tctx.configure(meter, corral_gateway_parse_limit=4 * MiB)
        flow = llm_flow(bomb(coding), coding)
        tracemalloc.start()
        await meter.response(flow)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert flow.metadata[md.PARSE_ERROR].startswith(TOO_LARGE)
    assert flow.response.raw_content == bomb(coding)  # the client's bytes, untouched
    assert peak < 16 * MiB, f"peak {peak / MiB:.1f} MiB"


@reliability(
    "upstream faults", "compressed SSE stream inflating past parse_limit",
    "bytes unchanged, as they arrive", "row with parse_error 'response too large to decode'; bounded memory",
)
def test_stream_tee_stops_decoding_a_compressed_stream_at_the_parse_limit() -> None:
    meter = Meter()
    with taddons.context(meter) as tctx:
        tctx.configure(meter, corral_gateway_parse_limit=4 * MiB)
        flow = llm_flow(b"", "gzip", "text/event-stream")
        flow.request.timestamp_start = 1.0
        meter.responseheaders(flow)
        tee = flow.response.stream
        raw = bomb("gzip")
        chunks = [raw[i:i + 16384] for i in range(0, len(raw), 16384)]
        tracemalloc.start()
        out = [tee(c) for c in chunks]
        tee(b"")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert out == chunks
    assert flow.metadata[md.PARSE_ERROR].startswith(TOO_LARGE)
    assert peak < 24 * MiB, f"peak {peak / MiB:.1f} MiB"


@reliability(
    "upstream faults", "compression bomb in a recorded answer (body_limit 1 MiB)",
    "bytes unchanged", "row with the first body_limit bytes of the decoded body; memory stays near the limit",
)
def test_recorder_stores_a_bomb_without_inflating_it() -> None:
    flow = llm_flow(bomb("gzip"), "gzip")
    stored, peak = peak_of(lambda: _response_body(flow.response, MiB))
    assert stored == "\0" * MiB
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB"


def sse(text: str) -> bytes:
    return f"data: {json.dumps({'model': 'm', 'choices': [{'delta': {'content': text}}]})}\n\n".encode()


@reliability(
    "upstream faults", "endless SSE stream (text past body_limit)",
    "every byte, as it arrives", "response_text clipped to body_limit with a '[corral: clipped ...]' marker",
)
def test_reassembled_text_is_clipped_with_a_marker() -> None:
    parser = get_family("openai").stream_parser("/v1/chat/completions", "sse")
    parser.bound(1000)
    for _ in range(500):
        parser.feed(sse("x" * 10))
    assert parser.parts.size == 1000
    result = parser.finish()
    assert result.text == "x" * 1000 + "\n[corral: clipped at 1000 characters]"


@reliability(
    "upstream faults", "SSE line or event without end (endless data: line, endless event)",
    "every byte, as it arrives", "the overlong event skipped with a parse_error; later events still counted",
)
def test_sse_decoder_buffers_are_bounded_and_it_resynchronises() -> None:
    dec = SSEDecoder()
    dec.max_buffer = 1000
    assert dec.feed(b"data: " + b"y" * 600) == []
    for _ in range(100):
        dec.feed(b"y" * 600)
        assert len(dec._buf) <= 1600
    events = dec.feed(b"y\r\n\r\ndata: after\n\n")
    assert [e.data for e in events] == ["after"] and "longer than 1000" in (dec.error or "")
    dec = SSEDecoder()
    dec.max_buffer = 1000
    for _ in range(100):  # many short data: lines, never a blank line
        dec.feed(b"data: " + b"z" * 90 + b"\n")
        assert dec._data_size <= 1100
    assert [e.data for e in dec.feed(b"\ndata: next\n\n")] == ["next"]


def test_ndjson_and_text_buffers_are_bounded() -> None:
    dec = NDJSONDecoder()
    dec.max_buffer = 1000
    for _ in range(100):
        dec.feed(b"q" * 600)
        assert len(dec._buf) <= 1600
    assert dec.feed(b"q\n{\"a\": 1}\n") == ['{"a": 1}'] and dec.error
    parts = TextParts(10)
    for _ in range(5):
        parts.append("abcd")
    assert parts.text() == "abcdabcdab\n[corral: clipped at 10 characters]"


def test_usage_stripper_forwards_an_endless_event_instead_of_holding_it() -> None:
    stripper = UsageChunkStripper()
    sent = 0
    for _ in range(100):
        sent += len(stripper.feed(b"data: " + b"w" * 10_000))
        assert len(stripper._buf) <= 80_000
    assert sent > 900_000
    tail = stripper.feed(b"\n\n" + b'data: {"choices": [], "usage": {"total_tokens": 1}}\n\n')
    assert sent + len(tail) == 100 * 10_006 + 2 and tail.endswith(b"w\n\n")  # the usage event still goes


@reliability(
    "isolation", "a stored field larger than body_limit (old row or bigger earlier limit)",
    "viewer API field clipped in SQL to body_limit, with a marker", "-",
)
def test_viewer_detail_never_returns_more_than_the_limit_per_field(tmp_path) -> None:
    database = dbmod.connect(f"sqlite:///{tmp_path / 'c.db'}")
    database_proxy.initialize(database)
    Flow.insert(id="big", started_at="2026-01-01 00:00:00", mode="reverse", method="POST", path="/x",
                response_text="t" * 100_000, request_body="b" * 50).execute()
    flow = queries.get_flow("big", 1000)
    assert flow is not None
    assert flow["response_text"] == "t" * 1000 + "\n[corral: clipped at 1000 characters]"
    assert flow["request_body"] == "b" * 50
    assert flow["method"] == "POST" and flow["id"] == "big" and flow["path"] == "/x"  # the other fields, whole
    assert queries.get_flow("big")["response_text"] == "t" * 100_000  # type: ignore[index]


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_a_small_compressed_chunk_is_decoded_in_bounded_pieces(coding: str) -> None:

    decoder = BoundedDecoder(coding, 32 * MiB)
    raw = bomb(coding)
    sizes: list[int] = []
    tracemalloc.start()
    for i in range(0, len(raw), 1 << 16):
        sizes += [len(p) for p in decoder.pieces(raw[i:i + (1 << 16)], MiB)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # brotli's output limit is a soft one (the buffer stops growing once past it): about a step
    assert sum(sizes) == 32 * MiB and decoder.too_large and max(sizes) <= (MiB if coding != "br" else 2.5 * MiB)
    assert peak < 6 * MiB, f"{coding}: peak {peak / MiB:.1f} MiB"
    whole = BoundedDecoder(coding, INFLATED)  # and all of it, within the limit, piece by piece
    assert sum(len(p) for i in range(0, len(raw), 8192) for p in whole.pieces(raw[i:i + 8192], 300_000)) == INFLATED
    assert not whole.too_large and whole.error is None


@pytest.mark.parametrize("option", ["corral_gateway_parse_limit", "corral_storage_body_limit"])
def test_limits_must_be_positive(option: str) -> None:
    from mitmproxy import exceptions

    meter = Meter()
    with taddons.context(meter) as tctx, pytest.raises(exceptions.OptionsError, match=option):
        tctx.configure(meter, **{option: 0})


async def test_a_huge_provider_error_message_is_clipped_too() -> None:
    meter = Meter()
    with taddons.context(meter) as tctx:
        tctx.configure(meter, corral_storage_body_limit=1000)
        flow = llm_flow(json.dumps({"error": {"type": "server_error", "message": "m" * 100_000}}).encode(), "")
        flow.response.status_code = 500
        await meter.response(flow)
    error = flow.metadata[md.RESPONSE_ERROR]
    assert error.startswith("server_error: mmm") and error.endswith("\n[corral: clipped at 1000 characters]")
    assert len(error) < 1100


def test_an_identity_stream_is_passed_as_it_is_and_stops_at_the_limit() -> None:
    decoder = BoundedDecoder("", 10)
    first = b"0123"
    assert decoder.feed(first) is first  # within the limit: the chunk itself, no copy
    assert decoder.feed(b"4567") == b"4567" and not decoder.too_large
    assert decoder.feed(b"89ab") == b"89"  # the chunk that crosses the limit is clipped there
    assert decoder.too_large and decoder.feed(b"cd") == b""
