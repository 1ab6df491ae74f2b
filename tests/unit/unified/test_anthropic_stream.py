"""The stream translator's fast path (event line + compact JSON pattern + chunk template) gives the same
bytes as its general path (json.loads, dict, json.dumps), whatever the chunking and whatever the events."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from addon.unified import anthropic_stream
from addon.unified.anthropic_stream import AnthropicStreamTranslator
from tests.support import corpus
from tests.unit.unified.test_anthropic_response import STREAM, sse


def _bench_mock():
    # By path: test_bench_mock puts bench/ first on sys.path, where `bench` is bench/bench.py, not the folder.
    path = Path(__file__).resolve().parents[3] / "bench" / "mock.py"
    spec = importlib.util.spec_from_file_location("corral_bench_mock", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


anthropic_events = _bench_mock().anthropic_events
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def raw(kind: str, data: str) -> bytes:
    return f"event: {kind}\ndata: {data}\n\n".encode()


START = raw("message_start", '{"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":'
                             '{"input_tokens":3,"output_tokens":1}}}')
STOP = raw("message_delta", '{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}'
           ) + raw("message_stop", '{"type":"message_stop"}')
# Events near the fast path's patterns: escapes, non-ASCII, padding, a data type other than the event
# line's, keys that do not belong together, invalid JSON and UTF-8, CRLF framing, two data lines.
EDGES = START + b"".join([
    raw("content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'),
    raw("content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"Hi"}}'),
    raw("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a b"}}'),
    raw("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}'),
    raw("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
                               '"text":"q\\"\\n\\/\\u00e9\\ud83d\\ude00\\ud800 \\\\"}            }  '),
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
    "\"text_delta\",\"text\":\"caf\u00e9 \u65e5\u672c \U0001F600\"}}\n\n".encode(),
    raw("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta",'
                               '"thinking":"hmm~\\t"}}'),
    raw("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","thinking":"x"}}'),
    raw("content_block_delta", '{"type":"content_block_delta","index":01,"delta":{"type":"text_delta","text":"x"}}'),
    raw("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\\x"}}'),
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":"\xff\xfe"}}\n\n',
    raw("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"},'
                               '"type":"ping"}'),
    raw("content_block_delta", '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", '
                               '"text": "spaced"}}'),
    raw("ping", '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"typed"}}'),
    raw("content_block_stop", '{"type":"content_block_stop","index":0   }'),
    raw("ping", '{"type": "ping"}'),
    b'event: content_block_delta\r\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":"crlf"}}\r\n\r\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,\n'
    b'data: "delta":{"type":"text_delta","text":"two lines"}}\n\n',
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"no event line"}}\n\n',
    raw("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta",'
                               '"signature":"abc"}}'),
]) + STOP


def corpus_streams() -> dict[str, bytes]:
    streams = {}
    for name in corpus.success_names("anthropic"):
        exchange = corpus.load(name)
        if "event-stream" in corpus.header_value(exchange["response"]["headers"], "content-type"):
            streams[name] = exchange["response"]["body_text"].encode()
    return streams


STREAMS = {**corpus_streams(), "bench mock": b"".join(anthropic_events("bench-d0-n8", 8)),
           "unit test stream": STREAM, "edge cases": EDGES,
           "crlf": EDGES.replace(b"\n", b"\r\n"),
           "error": START + sse({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}) + STOP}


def translate(data: bytes, fast: bool, include_usage: bool, cuts: list[int] = ()) -> bytes:
    t = AnthropicStreamTranslator(include_usage, fast=fast)
    t.created = 1700000000
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in itertools.pairwise([0, *points, len(data)])]
    return b"".join(t.feed(p) for p in pieces) + t.finish_stream()


def test_the_corpus_has_anthropic_streams() -> None:
    assert len(corpus_streams()) >= 3


@pytest.mark.parametrize("name", sorted(STREAMS))
@SETTINGS
@given(cuts=st.lists(st.integers(min_value=0), max_size=40), include_usage=st.booleans())
def test_fast_path_equals_general_path_split_anywhere(name: str, cuts: list[int], include_usage: bool) -> None:
    data = STREAMS[name]
    assert translate(data, True, include_usage, cuts) == translate(data, False, include_usage)


def test_byte_by_byte_equals_whole() -> None:
    for data in STREAMS.values():
        assert translate(data, True, True, list(range(len(data)))) == translate(data, False, True)


def test_fast_path_parses_only_the_events_that_carry_state(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[bytes] = []
    loads = json.loads
    monkeypatch.setattr(anthropic_stream.json, "loads", lambda s, **kw: (parsed.append(s), loads(s, **kw))[1])
    out = translate(STREAMS["bench mock"], True, True)
    assert [loads(p)["type"] for p in parsed] == ["message_start", "message_delta", "message_stop"]
    assert out.count(b'"content":"tok') == 8


def test_text_deltas_are_escaped_as_json_dumps_escapes_them() -> None:
    got = translate(EDGES, True, False)
    chunks = [json.loads(line[6:]) for line in got.split(b"\n") if line.startswith(b"data: {")]
    texts = [c["choices"][0]["delta"].get("content") for c in chunks if c.get("choices")]
    assert 'q"\n/\u00e9\U0001F600\ud800 \\' in texts and "caf\u00e9 \u65e5\u672c \U0001F600" in texts
    assert b"\\u00e9" in got and "\u00e9".encode() not in got  # ASCII-only, as json.dumps writes it
