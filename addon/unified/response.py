"""UnifiedResponse: the native answer to a translated unified request, in OpenAI's chat completions shape.

Placed after the Recorder: the Meter has parsed the native answer (usage and cost are exact) and the
Recorder has kept it; only then does the client's copy change. A stream is wrapped around the tees of
the addons before (the Meter's, the cache's, the fixture taker's), so they all see native bytes while
the client gets OpenAI chunks; any other body (JSON, errors) is translated whole, at its end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mitmproxy import http

from addon import delivery, metadata as md
from addon.decoding import BoundedDecoder, decode_bounded
from addon.unified import embeddings
from addon.unified.families import TRANSLATIONS, Translation

logger = logging.getLogger(__name__)

# Names the upstream's content-encoding of a body Corral decoded to translate it.
DECODED_HEADER = "corral-decoded"
# Names the native media type of a stream translated to SSE when it was not SSE (Bedrock's event stream):
# the cache keeps these headers with the native body, and a hit must be known for the stream it is.
NATIVE_TYPE_HEADER = "corral-native-content-type"
# Most decoded bytes of a non-streamed native answer translated (a chat answer is far smaller).
WHOLE_LIMIT = 64 << 20


class UnifiedResponse:
    def __init__(self) -> None:
        self.bodies: set[str] = set()  # flow ids whose whole body is translated at its end

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        family = md.unified_translated(flow)
        if family is None or response is None:
            return
        translation = translation_for(flow)
        shape = "embeddings" if flow.metadata[md.UNIFIED].get("endpoint") == "embeddings" else "chat completions"
        flow.metadata.setdefault(md.CHANGES, []).append(
            f"unified endpoint: the client got the answer in OpenAI's {shape} shape (recorded: the native one)")
        inner = response.stream
        streamed = callable(inner) or delivery.should_stream(flow)
        if not streamed:
            self.bodies.add(flow.id)  # decoded and translated in `response`, whole
            return
        # The client gets the translation uncompressed. The native coding stays named in a header, because the
        # cache keeps these headers with the native body, and a hit's body must be decoded the same way.
        coding = response.headers.pop("content-encoding", "") or response.headers.get(DECODED_HEADER, "")
        if coding:
            response.headers[DECODED_HEADER] = coding
        delivery.reframe_for_rewrite(flow)
        decoder = BoundedDecoder(coding, WHOLE_LIMIT)
        if _is_native_stream(response, translation):
            translator = _stream_translator(flow, translation)
            response.stream = _wrap(inner, decoder, translator.feed, translator.finish_stream)
            _mark_sse(response)
        else:
            whole = _Whole(flow, translation)
            response.headers["content-type"] = "application/json"
            response.stream = _wrap(inner, decoder, whole.feed, whole.finish)

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.id not in self.bodies:
            return
        self.bodies.discard(flow.id)
        response = flow.response
        if response is None or response.raw_content is None:
            return
        coding = response.headers.pop("content-encoding", "") or response.headers.pop(DECODED_HEADER, "")
        decoded = decode_bounded(response.raw_content, coding, WHOLE_LIMIT)
        translation = translation_for(flow)
        if _is_native_stream(response, translation):
            # A whole stream made in process (a cache hit, a fixture): translated event by event all the same.
            translator = _stream_translator(flow, translation)
            response.content = translator.feed(decoded.data) + translator.finish_stream()
            _mark_sse(response)
            return
        response.content = _translate_whole(flow, translation, response.status_code, decoded.data)
        response.headers["content-type"] = "application/json"

    def error(self, flow: http.HTTPFlow) -> None:
        self.bodies.discard(flow.id)


def translation_for(flow: http.HTTPFlow) -> Translation:
    """The translation of a translated unified flow: its family's chat translation, or its embeddings one."""
    unified = flow.metadata[md.UNIFIED]
    if unified.get("endpoint") == "embeddings":
        return embeddings.as_translation(unified)
    return TRANSLATIONS[unified["translate"]]


def _is_native_stream(response: http.Response, translation: Translation) -> bool:
    media = response.headers.get(NATIVE_TYPE_HEADER) or delivery.media_type(response.headers)
    return 200 <= response.status_code < 300 and translation.stream_media in media


def _mark_sse(response: http.Response) -> None:
    native = response.headers.get(NATIVE_TYPE_HEADER) or delivery.media_type(response.headers)
    if native != "text/event-stream":
        response.headers[NATIVE_TYPE_HEADER] = native
    response.headers["content-type"] = "text/event-stream"


def _stream_translator(flow: http.HTTPFlow, translation: Translation):
    options = flow.metadata.get(md.UNIFIED_STREAM) or {}
    return translation.stream_translator(bool(options.get("include_usage")), *_model(flow, translation))


def _translate_whole(flow: http.HTTPFlow, translation: Translation, status: int, body: bytes) -> bytes:
    return translation.translate_whole(status, body, *_model(flow, translation))


def _model(flow: http.HTTPFlow, translation: Translation) -> tuple[str, ...]:
    """The native model, for a family whose answer does not name it."""
    if translation.model_in_answer:
        return ()
    return ((flow.metadata.get(md.UNIFIED) or {}).get("native_model") or "",)


class _Whole:
    """Collects a streamed non-SSE body and translates it at its end."""

    def __init__(self, flow: http.HTTPFlow, translation: Translation) -> None:
        self.flow = flow
        self.translation = translation
        self.parts: list[bytes] = []

    def feed(self, data: bytes) -> bytes:
        self.parts.append(data)
        return b""

    def finish(self) -> bytes:
        status = self.flow.response.status_code if self.flow.response is not None else 502
        return _translate_whole(self.flow, self.translation, status, b"".join(self.parts))


def _wrap(inner, decoder: BoundedDecoder, feed: Callable[[bytes], bytes],
          finish: Callable[[], bytes]) -> Callable[[bytes], bytes | list[bytes]]:
    """A stream callable: the inner tees' output, decoded, through ``feed``; at the end ``finish``."""
    def stream(chunk: bytes) -> bytes | list[bytes]:
        native = inner(chunk) if callable(inner) else chunk
        data = native if isinstance(native, bytes) else b"".join(native)
        if data:
            out = feed(decoder.feed(data))
        else:
            out = b""
        if chunk == b"":
            return out + finish()  # the end: whatever it is, mitmproxy then ends the body
        return [out] if out else []  # never b"" mid-stream: an empty chunk would end the body early

    return stream


