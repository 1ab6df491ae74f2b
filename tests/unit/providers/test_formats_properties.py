"""Property tests for the framing decoders and family stream parsers: chunking never changes the
result, garbage never raises, event-stream frames round-trip, and the usage-chunk stripper removes
exactly one event."""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from providers.formats import FAMILIES, get_family
from providers.formats.base import ParseResult
from providers.formats.eventstream import EventStreamDecoder, Message
from providers.formats.include_usage import UsageChunkStripper, inject_include_usage
from providers.formats.jsonarray import JSONArrayDecoder
from providers.formats.sse import SSEDecoder
from tests.support.eventstream import encode_frame
from tests.unit.providers.test_formats_corpus import content_type, family_for, load, request_path, response_bytes

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

STREAMS = [
    "openai-chat-stream-1",
    "openai-responses-stream-1",
    "openrouter-chat-stream-2",
    "anthropic-messages-stream-3",
    "gemini-streamgeneratecontent-stream-1",
    "gemini-streamgeneratecontent-stream-2",
    "cohere-v2chat-stream-1",
    "cohere-v1chat-stream-1",
    "bedrock-converse-stream-2",
    "bedrock-invoke-stream-1",
    "ollama-chat-stream-1",
]
KINDS = ["sse", "ndjson", "json-array", "aws-eventstream"]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def run(name: str, chunks: list[bytes]) -> ParseResult:
    case = load(name)
    family = family_for(case)
    path = request_path(case)
    kind = family.stream_kind(path, content_type(case))
    assert kind is not None
    parser = family.stream_parser(path, kind)
    for c in chunks:
        parser.feed(c)
    return parser.finish()


@SETTINGS
@given(name=st.sampled_from(STREAMS), cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_any_chunking_gives_the_same_result(name: str, cuts: list[int]) -> None:
    data = response_bytes(load(name))
    whole = run(name, [data])
    assert whole.complete and whole.parse_error is None
    assert dataclasses.asdict(run(name, split(data, cuts))) == dataclasses.asdict(whole)


@SETTINGS
@given(
    family=st.sampled_from(sorted(FAMILIES)),
    kind=st.sampled_from(KINDS),
    garbage=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
)
def test_garbage_never_raises(family: str, kind: str, garbage: bytes, cuts: list[int]) -> None:
    fam = get_family(family)
    parser = fam.stream_parser("/model/x/converse-stream", kind)
    for c in split(garbage, cuts):
        parser.feed(c)
    assert isinstance(parser.finish(), ParseResult)
    assert isinstance(fam.parse_response("/v1/x", 200, garbage), ParseResult)
    assert isinstance(fam.parse_response("/v1/x", 500, garbage), ParseResult)
    assert fam.parse_request("/v1/x?alt=sse", garbage) is not None


@SETTINGS
@given(name=st.sampled_from(STREAMS), data=st.data())
def test_corrupted_streams_never_raise(name: str, data: st.DataObject) -> None:
    raw = bytearray(response_bytes(load(name)))
    for _ in range(data.draw(st.integers(1, 5))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    assert isinstance(run(name, [bytes(raw[:cut]), bytes(raw[cut:])]), ParseResult)


@SETTINGS
@given(
    payload=st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=20), max_size=4),
    sep=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
)
def test_sse_line_endings_and_chunking(payload: dict[str, Any], sep: str, cuts: list[int]) -> None:
    text = json.dumps(payload, ensure_ascii=False)
    stream = sep.join([": comment", "event: x", f"data: {text}", "data: second", "", "data: [DONE]", "", ""])
    decoder = SSEDecoder()
    events = [e for c in split(stream.encode(), cuts) for e in decoder.feed(c)] + decoder.finish()
    assert [(e.event, e.data) for e in events] == [("x", f"{text}\nsecond"), (None, "[DONE]")]


@SETTINGS
@given(
    items=st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=10) | st.integers()), max_size=5),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
)
def test_json_array_elements(items: list[dict[str, Any]], cuts: list[int]) -> None:
    body = ("[" + "\n,\n".join(json.dumps(i, ensure_ascii=False) for i in items) + "]").encode()
    decoder = JSONArrayDecoder()
    out = [e for c in split(body, cuts) for e in decoder.feed(c)] + decoder.finish()
    assert [json.loads(e) for e in out] == items
    assert decoder.error is None and decoder.closed


# --- AWS event stream -------------------------------------------------------------------------


header_values = st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.binary(max_size=30) | st.text(max_size=30)
messages = st.lists(
    st.tuples(
        st.dictionaries(
            st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode()) < 256), header_values, max_size=4
        ),
        st.binary(max_size=200),
    ),
    max_size=5,
)


@SETTINGS
@given(msgs=messages, cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_eventstream_round_trip(msgs: list[tuple[dict[str, Any], bytes]], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(h, p) for h, p in msgs)
    decoder = EventStreamDecoder()
    out = [m for c in split(wire, cuts) for m in decoder.feed(c)] + decoder.finish()
    assert decoder.error is None
    assert out == [Message(h, p) for h, p in msgs]


@SETTINGS
@given(msgs=messages.filter(bool), data=st.data())
def test_eventstream_bad_checksum_is_a_parse_error(
    msgs: list[tuple[dict[str, Any], bytes]], data: st.DataObject
) -> None:
    wire = bytearray(b"".join(encode_frame(h, p) for h, p in msgs))
    i = data.draw(st.integers(0, len(wire) - 1))
    wire[i] ^= data.draw(st.integers(1, 255))
    decoder = EventStreamDecoder()
    decoder.feed(bytes(wire))
    decoder.finish()
    assert decoder.error is not None
    parser = get_family("bedrock").stream_parser("/model/m/converse-stream", "aws-eventstream")
    parser.feed(bytes(wire))
    assert parser.finish().parse_error is not None


def test_bedrock_exception_frame_is_an_error() -> None:
    headers = {":message-type": "exception", ":exception-type": "throttlingException",
               ":content-type": "application/json"}
    frame = encode_frame(headers, b'{"message":"Too many requests, please wait."}')
    parser = get_family("bedrock").stream_parser("/model/m/converse-stream", "aws-eventstream")
    parser.feed(frame)
    result = parser.finish()
    assert result.error == "throttlingException: Too many requests, please wait."
    assert result.parse_error is None


# --- include_usage ----------------------------------------------------------------------------

USAGE_EVENT = (
    'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[],'
    '"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}'
)
AZURE_FIRST = 'data: {"choices":[],"created":0,"id":"","model":"","prompt_filter_results":[]}'
PLAIN = 'data: {"choices":[{"index":0,"delta":{"content":"h\u00e9"}}],"usage":null}'


@SETTINGS
@given(
    before=st.lists(st.sampled_from([AZURE_FIRST, PLAIN, ": OPENROUTER PROCESSING"]), max_size=5),
    sep=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0), max_size=30),
)
def test_stripper_removes_only_the_usage_event(before: list[str], sep: str, cuts: list[int]) -> None:
    def event(text: str) -> bytes:
        return (text + sep + sep).encode()

    head = b"".join(event(e) for e in before)
    tail = event("data: [DONE]")
    wire = head + event(USAGE_EVENT) + tail
    stripper = UsageChunkStripper()
    out = b"".join(stripper.feed(c) for c in split(wire, cuts)) + stripper.finish()
    assert out == head + tail
    assert stripper.stripped == 1


@SETTINGS
@given(name=st.sampled_from(["openai-chat-stream-1", "openai-chat-stream-2", "azure-openai-chat-stream-1",
                             "mistral-chat-stream-1", "openrouter-chat-stream-1"]),
       cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_stripper_on_corpus_streams(name: str, cuts: list[int]) -> None:
    data = response_bytes(load(name))
    stripper = UsageChunkStripper()
    out = b"".join(stripper.feed(c) for c in split(data, cuts)) + stripper.finish()
    whole = UsageChunkStripper()
    assert out == whole.feed(data) + whole.finish()
    # Only OpenAI proper sends a separate usage-only chunk; the others put usage on a content chunk.
    assert whole.stripped == (1 if name.startswith("openai-") else 0)
    assert len(out) == len(data) or b'"choices":[]' in data


@SETTINGS
@given(garbage=st.binary(max_size=200), cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_stripper_passes_garbage_through(garbage: bytes, cuts: list[int]) -> None:
    stripper = UsageChunkStripper()
    out = b"".join(stripper.feed(c) for c in split(garbage, cuts)) + stripper.finish()
    assert out == garbage


def _inject(body: bytes) -> bytes | None:
    edit = inject_include_usage(body)
    return None if edit is None else edit.apply(body)


def test_inject_include_usage() -> None:
    body = json.dumps({"model": "m", "stream": True, "stream_options": {"x": 1}}).encode()
    new = _inject(body)
    assert new is not None
    assert json.loads(new)["stream_options"] == {"include_usage": True, "x": 1}
    assert _inject(new) is None
    assert _inject(b'{"model":"m"}') is None
    assert _inject(b'{"model":"m","stream":false}') is None
    assert _inject(b"[1,2]") is None
    assert _inject(b"\xff not json") is None
    assert json.loads(_inject(b'{"stream":true,"stream_options":null}') or b"")["stream_options"] == {
        "include_usage": True
    }
    info = get_family("openai").parse_request("/v1/chat/completions", new)
    assert info.stream and info.include_usage


@pytest.mark.parametrize("body, expected", [
    # Everything the client wrote stays: huge numbers, duplicate keys, escapes, whitespace, key order.
    (b' {\n "model" : "m",\t"n": 1e400, "n": 2, "s": "\\u00e9\\"}{", "stream":true }',
     b' {"stream_options":{"include_usage":true},\n "model" : "m",\t"n": 1e400, "n": 2, "s": "\\u00e9\\"}{",'
     b' "stream":true }'),
    (b'{"stream":true,"stream_options":{ }}', b'{"stream":true,"stream_options":{"include_usage":true }}'),
    (b'{"stream":true,"stream_options":{"a":[1,"]}"] , "include_usage" : false}}',
     b'{"stream":true,"stream_options":{"a":[1,"]}"] , "include_usage" : true}}'),
])
def test_inject_include_usage_keeps_every_other_byte(body: bytes, expected: bytes) -> None:
    edit = inject_include_usage(body)
    assert edit is not None and edit.apply(body) == expected
    assert edit.undo(expected) == body


@pytest.mark.parametrize("body", [
    b'{"stream":true,"stream_options":{},"stream_options":{}}',  # which one would the upstream read?
    b'{"stream":true,"stream_options":{"include_usage":false,"include_usage":false}}',
    b'{"stream":true,"stream_options":"yes"}',
    b'{"stream":true,"stream_options":{"include_usage":true}}',  # asked already
])
def test_inject_include_usage_leaves_unsafe_bodies_alone(body: bytes) -> None:
    assert inject_include_usage(body) is None


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8), max_size=5), st.sampled_from(["", " ", "\n  "]))
def test_inject_include_usage_only_adds_the_field(obj: dict, ws: str) -> None:
    obj = {k: v for k, v in obj.items() if k not in ("stream", "stream_options")}
    body = json.dumps({**obj, "stream": True}, indent=ws or None, ensure_ascii=False).encode()
    edit = inject_include_usage(body)
    assert edit is not None and edit.removed == b""
    new = edit.apply(body)
    assert json.loads(new) == {**obj, "stream": True, "stream_options": {"include_usage": True}}
    assert new.replace(b'"stream_options":{"include_usage":true},', b"", 1) == body


# --- synthetic edge cases the corpus does not cover -------------------------------------------


def feed_all(family: str, path: str, kind: str, data: bytes) -> ParseResult:
    parser = get_family(family).stream_parser(path, kind)
    parser.feed(data)
    return parser.finish()


def test_anthropic_error_event_mid_stream() -> None:
    stream = (
        b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-x",'
        b'"usage":{"input_tokens":9,"output_tokens":1}}}\n\n'
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    result = feed_all("anthropic", "/v1/messages", "sse", stream)
    assert result.error == "overloaded_error: Overloaded"
    assert result.complete is False
    assert result.usage.input_tokens == 9 and result.model == "claude-x"


def test_truncated_streams_are_not_complete() -> None:
    data = response_bytes(load("openai-chat-stream-1"))
    cut = data.index(b"data: [DONE]")
    result = feed_all("openai", "/v1/chat/completions", "sse", data[:cut])
    assert result.complete is False and result.parse_error is None
    data = response_bytes(load("gemini-streamgeneratecontent-stream-2"))
    result = feed_all("gemini", "/v1beta/models/m:streamGenerateContent", "json-array", data[: len(data) // 2])
    assert result.complete is False and result.parse_error is not None
    data = response_bytes(load("bedrock-converse-stream-2"))
    result = feed_all("bedrock", "/model/m/converse-stream", "aws-eventstream", data[:-7])
    assert result.complete is True  # messageStop arrived; only the metadata frame was cut
    assert result.usage.input_tokens is None and "truncated" in (result.parse_error or "")


def test_text_is_reassembled() -> None:
    assert run("anthropic-messages-stream-3", [response_bytes(load("anthropic-messages-stream-3"))]).text == "Goodbye."
    assert run("openai-responses-stream-1", [response_bytes(load("openai-responses-stream-1"))]).text == "pong"
    gemini = run(
        "gemini-streamgeneratecontent-stream-1", [response_bytes(load("gemini-streamgeneratecontent-stream-1"))]
    )
    assert gemini.text == "The capital of France is Paris.\n"
    cohere = run("cohere-v1chat-stream-1", [response_bytes(load("cohere-v1chat-stream-1"))])
    assert (cohere.text or "").startswith("Arrrr")


def test_request_stream_flags() -> None:
    ollama = get_family("ollama")
    assert ollama.parse_request("/api/chat", b'{"model":"llama3"}').stream is True
    assert ollama.parse_request("/api/chat", b'{"model":"llama3","stream":false}').stream is False
    assert ollama.parse_request("/api/embed", b'{"model":"e"}').stream is False
    gemini = get_family("gemini")
    info = gemini.parse_request("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", b"")
    assert info.model == "gemini-2.5-flash" and info.stream is True
    assert gemini.stream_kind("/v1beta/models/g:streamGenerateContent", "application/json") == "json-array"
    assert gemini.stream_kind("/v1beta/models/g:generateContent", "application/json") is None
    bedrock = get_family("bedrock")
    info = bedrock.parse_request("/model/us.anthropic.claude-sonnet-4-6%3A0/invoke-with-response-stream", b"\x00")
    assert info.model == "us.anthropic.claude-sonnet-4-6:0" and info.stream is True
    assert bedrock.parse_request("/model/m/converse", b"{}").stream is False
    azure = get_family("openai").parse_request("/openai/deployments/dep-1/chat/completions?api-version=x", b"{}")
    assert azure.model == "dep-1"
    assert get_family("openai").parse_request("/v1/audio/transcriptions", b"--multipart").parse_error


def test_error_body_shapes() -> None:
    def body(family: str, kind: str) -> Any:
        return json.loads(get_family(family).error_body(404, "nope", kind)[0])

    assert body("openai", "not_found") == {
        "error": {"message": "nope", "type": "invalid_request_error", "param": None, "code": "route_not_found"}
    }
    anthropic_error = {"type": "rate_limit_error", "message": "nope"}
    assert body("anthropic", "rate_limited") == {"type": "error", "error": anthropic_error}
    gemini_error = {"code": 404, "message": "nope", "status": "UNAVAILABLE"}
    assert body("gemini", "upstream_unavailable") == {"error": gemini_error}
    assert body("cohere", "bad_request") == {"message": "nope"}
    assert body("bedrock", "timeout") == {"message": "nope"}
    assert body("ollama", "not_found") == {"error": "nope"}


@pytest.mark.parametrize("family, body", [
    ("openai", b'{"id": "resp_1", "object": "response", "model": "gpt-4o", "status": "failed", '
               b'"error": {"code": "server_error", "message": "job failed"}, "output": []}'),
    ("openai", b'{"id": "ftjob_1", "object": "fine_tuning.job", "model": "gpt-4o-mini", "error": null}'),
    ("anthropic", b'{"id": "msg_1", "type": "message", "model": "claude", "content": [], "error": {"x": 1}}'),
])
def test_an_error_field_of_a_2xx_resource_is_not_a_failure(family: str, body: bytes) -> None:
    result = get_family(family).parse_response("/v1/x", 200, body)
    assert (result.error, result.parse_error, result.complete) == (None, None, True)


@pytest.mark.parametrize("family, body", [
    ("openai", b'{"error": {"message": "overloaded", "type": "server_error"}}'),
    ("anthropic", b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'),
    ("ollama", b'{"error": "model not found"}'),
])
def test_an_error_envelope_in_a_2xx_is_a_failure(family: str, body: bytes) -> None:
    assert get_family(family).parse_response("/v1/x", 200, body).error
