"""Meter: reads model, usage and errors from requests and responses, streaming or not.

Only small known-length JSON answers are held whole (addon/delivery.py); every other body streams:
``responseheaders`` installs a tee as ``flow.response.stream`` that forwards every wire chunk at once.
For a 2xx stream (SSE, NDJSON, ...) it feeds a decoded copy to the family's incremental parser; any
other body it keeps (JSON up to a parse ceiling, other types up to the record limit) for ``response``
to read once it is whole. The tee puts what it kept into ``flow.response`` so the recorder and mitmweb
see the body of a streamed response too.

The one change Corral makes to what it forwards, the include-usage option and its usage chunk, is
written down in ``corral.changes`` and ``corral.request_edit`` for the record.
"""

from __future__ import annotations

import asyncio
import logging
import time

from mitmproxy import ctx, exceptions, http

from addon import delivery, metadata as md
from addon.decoding import TOO_LARGE, BoundedDecoder, decode_bounded
from providers.formats import get_family
from providers.formats.base import Family, ParseResult, StreamParser
from providers.formats.common import clip_text, http_error_fallback
from providers.formats.include_usage import UsageChunkStripper, inject_include_usage

logger = logging.getLogger(__name__)

# Bodies above this are parsed on a worker thread, not on the event loop.
INLINE_PARSE_LIMIT = 1 << 20
# A compressed stream chunk is decoded and parsed this many bytes at a time (1 KB of gzip can be 1 MB).
DECODE_STEP = 1 << 20


def too_large(limit: int) -> str:
    return f"{TOO_LARGE} (more than {limit} bytes; [gateway] parse_limit)"


class StreamTee:
    """The callable mitmproxy calls with each response chunk (then b"" at the end)."""

    def __init__(
        self, flow: http.HTTPFlow, parser: StreamParser | None, keep_limit: int, stripper: UsageChunkStripper | None,
        parse_limit: int = 64 << 20,
    ) -> None:
        self.flow = flow
        self.parser = parser  # None: a whole body, read by Meter.response from what was kept
        self.sent = 0
        self.keep_limit = keep_limit
        self.kept = bytearray()
        self.truncated = False
        self.stripper = stripper
        self.encoding = flow.response.headers.get("content-encoding", "") if flow.response else ""
        # Only a compressed stream is bounded in total: it can inflate a thousandfold, while plain
        # bytes cost the sender as much as the parse costs here (and the parser's memory is bounded).
        self.decoder = None if self.encoding.strip().lower() in ("", "identity") else BoundedDecoder(
            self.encoding, parse_limit)
        self.decode_error: str | None = None
        self.finished = False

    def __call__(self, chunk: bytes) -> bytes | list[bytes]:
        try:
            if chunk:
                self._observe(chunk)
                if self.stripper is not None:
                    out = self.stripper.feed(chunk)
                    self.sent += len(out)
                    return out if out else []  # never b"": a zero-length chunk ends the body
                self.sent += len(chunk)
                return chunk
            tail = self.stripper.finish() if self.stripper is not None else b""
            self.sent += len(tail)
            self.finish(complete_body=True)
            return tail
        except Exception:  # the client's bytes must flow even if metering breaks
            logger.exception("corral: stream metering failed for %s", self.flow.request.path)
            self.stripper = None
            self.sent += len(chunk)
            return chunk

    def _observe(self, chunk: bytes) -> None:
        if md.FIRST_BYTE_AT not in self.flow.metadata:
            self.flow.metadata[md.FIRST_BYTE_AT] = time.time()
        room = self.keep_limit - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]
        if len(chunk) > room:
            self.truncated = True
        if self.parser is None or self.decode_error is not None:
            return
        if self.decoder is None:
            self.parser.feed(chunk)
            return
        for piece in self.decoder.pieces(chunk, DECODE_STEP):
            self.parser.feed(piece)
        if self.decoder.error:
            self.decode_error = f"stream not decoded: {self.decoder.error}"
        elif self.decoder.too_large:
            self.decode_error = too_large(self.decoder.limit)

    def finish(self, complete_body: bool) -> None:
        """Close the parser and publish what it found. Runs at the end of the stream, or from the
        error hook when the stream broke off (client abort, upstream truncation)."""
        if self.finished:
            return
        self.finished = True
        meta = self.flow.metadata
        meta[md.RESPONSE_BYTES] = self.sent
        if self.stripper is not None and self.stripper.stripped:
            meta.setdefault(md.CHANGES, []).append(
                f"response body: removed {self.stripper.stripped} usage-only SSE event(s) the client did not ask for"
            )
        if self.parser is not None:
            result = self.parser.finish()
            if self.decode_error:
                result.parse_error = result.parse_error or self.decode_error
            publish(self.flow, result)
        if self.flow.response is not None and complete_body:
            self.flow.response.data.content = bytes(self.kept)


def publish(flow: http.HTTPFlow, result: ParseResult) -> None:
    meta = flow.metadata
    limit = ctx.options.corral_storage_body_limit  # a provider's error message can be a whole body too
    result.text, result.error = clip_text(result.text, limit), clip_text(result.error, limit)
    meta[md.MODEL] = result.model or meta.get(md.MODEL)
    meta[md.USAGE] = result.usage.as_dict()
    meta[md.COMPLETE] = bool(result.complete)
    if result.error:
        meta[md.RESPONSE_ERROR] = result.error
    if result.parse_error:
        meta[md.PARSE_ERROR] = result.parse_error
    if result.text:
        meta[md.TEXT] = result.text
    if result.finish_reason:
        meta[md.FINISH_REASON] = result.finish_reason
    if result.response_id:
        meta[md.RESPONSE_ID] = result.response_id


class Meter:
    def __init__(self) -> None:
        self.tees: dict[str, StreamTee] = {}

    def load(self, loader) -> None:
        loader.add_option(
            "corral_usage_inject", bool, True,
            "Ask OpenAI-compatible upstreams for stream usage (stream_options.include_usage) when the "
            "client did not, on endpoints whose schema has that option (catalog include_usage_paths: chat "
            "and legacy completions), and remove the extra usage chunk from what the client receives.",
        )
        loader.add_option(
            "corral_storage_body_limit", int, 4 * 1024 * 1024,
            "Bytes of each request/response body kept for the record (the client always gets all); also "
            "the most characters of reassembled text and bytes of any stream buffer kept per flow.",
        )
        loader.add_option(
            "corral_gateway_parse_limit", int, 64 * 1024 * 1024,
            "Most bytes of a response body Corral keeps whole, decodes (gzip, br, ...) and parses for usage. "
            "Past it the client still gets every byte; the record says the response was too large.",
        )

    def configure(self, updated: set[str]) -> None:
        for name in ("corral_storage_body_limit", "corral_gateway_parse_limit"):
            if name in updated and getattr(ctx.options, name) <= 0:
                raise exceptions.OptionsError(f"{name} must be a positive number of bytes")

    @staticmethod
    def _family(flow: http.HTTPFlow) -> Family | None:
        name = flow.metadata.get(md.FORMAT)
        if not name or md.PROVIDER not in flow.metadata or flow.metadata.get(md.CACHE) == "hit":
            return None  # not an LLM flow, or a cache hit whose facts the cache already published
        return get_family(name)

    def request(self, flow: http.HTTPFlow) -> None:
        family = self._family(flow)
        meta = flow.metadata
        if family is None or flow.response is not None:
            return
        if (
            meta.get(md.INCLUDE_USAGE_ENDPOINT) and meta.get(md.STREAM_REQUESTED)
            and not meta.get(md.INCLUDE_USAGE_REQUESTED)
            and ctx.options.corral_usage_inject
            and not flow.request.headers.get("content-encoding")
        ):
            body = flow.request.raw_content or b""
            edit = inject_include_usage(body)
            if edit is not None:
                flow.request.content = edit.apply(body)  # also sets Content-Length to the new size
                meta[md.INCLUDE_USAGE_INJECTED] = True
                meta[md.REQUEST_EDIT] = {
                    "at": edit.at, "removed": edit.removed.decode(), "added": edit.added.decode(),
                }
                meta.setdefault(md.CHANGES, []).append(edit.describe())

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        family = self._family(flow)
        response = flow.response
        if family is None or response is None:
            return
        flow.metadata[md.RESPONSE_TYPE] = delivery.media_type(response.headers) or None
        kind = None
        if 200 <= response.status_code < 300 and delivery.has_body(flow):
            kind = family.stream_kind(flow.request.path, response.headers.get("content-type", ""))
        limit, parse_limit = ctx.options.corral_storage_body_limit, ctx.options.corral_gateway_parse_limit
        if kind is not None:
            flow.metadata[md.STREAM] = True
            stripper = None
            if flow.metadata.get(md.INCLUDE_USAGE_INJECTED) and kind == "sse":
                stripper = UsageChunkStripper()
                if delivery.reframe_for_rewrite(flow):
                    flow.metadata.setdefault(md.CHANGES, []).append(
                        "response framing: upstream Content-Length dropped (the body is shortened), sent chunked"
                    )
            parser = family.stream_parser(flow.request.path, kind)
            parser.bound(limit)
            tee = StreamTee(flow, parser, limit, stripper, parse_limit)
        elif delivery.should_stream(flow):
            whole_json = delivery.is_json(flow.metadata[md.RESPONSE_TYPE] or "")
            tee = StreamTee(flow, None, max(limit, parse_limit) if whole_json else limit, None)
        else:
            return
        self.tees[flow.id] = tee
        response.stream = tee

    async def response(self, flow: http.HTTPFlow) -> None:
        tee = self.tees.pop(flow.id, None)
        if tee is not None:
            tee.finish(complete_body=True)
            if tee.parser is not None:
                return
        family = self._family(flow)
        if family is None or flow.response is None or md.USAGE in flow.metadata:
            return
        if tee is None:
            flow.metadata[md.RESPONSE_BYTES] = len(flow.response.raw_content or b"")
        unparsed = self._unparsed(flow, tee)
        if unparsed is not None:
            publish(flow, unparsed)
            return
        flow.metadata.setdefault(md.STREAM, False)
        limit = ctx.options.corral_gateway_parse_limit
        decoded = decode_bounded(flow.response.raw_content, flow.response.headers.get("content-encoding", ""), limit)
        decode_error = None
        body = decoded.data
        if decoded.error:  # e.g. content-encoding: gzip on bytes that are not gzip: parse them as they are
            decode_error = f"response body not decoded: {decoded.error}"
            decoded = decode_bounded(flow.response.raw_content, "", limit)
            body = decoded.data
        if decoded.too_large:
            publish(flow, ParseResult(parse_error=too_large(limit)))
            return
        if len(body) > INLINE_PARSE_LIMIT:
            result = await asyncio.to_thread(family.parse_response, flow.request.path, flow.response.status_code, body)
        else:
            result = family.parse_response(flow.request.path, flow.response.status_code, body)
        if decode_error:
            result.parse_error = result.parse_error or decode_error
        publish(flow, result)

    @staticmethod
    def _unparsed(flow: http.HTTPFlow, tee: StreamTee | None) -> ParseResult | None:
        """The result of a body that is not for the family's JSON parser, else None."""
        assert flow.response is not None
        status = flow.response.status_code
        body = flow.response.raw_content or b""
        error = http_error_fallback(status, body) if status >= 400 else None
        if not delivery.has_body(flow) or not (body or (tee is not None and tee.sent)):
            return ParseResult(complete=True, error=error)  # HEAD, 204, an empty body: nothing to parse
        mtype = flow.metadata.get(md.RESPONSE_TYPE) or ""
        if mtype == "text/html":
            # No provider API answers with a page: a proxy's or a maintenance page stands in for the answer.
            return ParseResult(error=error, parse_error="answer is an HTML page (text/html), not the API's response")
        if mtype and not delivery.is_json(mtype):
            # Audio, video, file content, HTML: not meant to be JSON, so not a parse error.
            return ParseResult(complete=True, error=error)
        if tee is not None and tee.truncated:
            return ParseResult(complete=True, error=error,
                               parse_error=f"response body larger than {tee.keep_limit} bytes: not parsed")
        return None

    def error(self, flow: http.HTTPFlow) -> None:
        tee = self.tees.pop(flow.id, None)
        if tee is not None:
            tee.finish(complete_body=False)
            if tee.parser is None and md.USAGE not in flow.metadata:
                publish(flow, ParseResult(complete=False))  # a body that broke off half-way
            if flow.response is not None:
                flow.response.data.content = bytes(tee.kept)
