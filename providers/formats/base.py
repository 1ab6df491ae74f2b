"""What every wire-format family handler provides.

A *family* is a wire format shared by many vendors (OpenAI-compatible, Anthropic, Gemini, Cohere,
Bedrock event stream, Ollama NDJSON). Handlers are pure: bytes in, facts out. They never touch
mitmproxy, the network or the database, so they are tested directly against ../shared/corpus.

Rules every handler follows:
- Usage is read, never estimated. A counter the provider did not report is ``None``, never 0.
- Bad input never raises out of a handler: it is reported in ``parse_error``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    # Prompt tokens served from the provider's prompt cache (OpenAI cached_tokens, Anthropic
    # cache_read_input_tokens, DeepSeek prompt_cache_hit_tokens, Gemini cachedContentTokenCount).
    cached_input_tokens: int | None = None
    # Tokens written into the provider's prompt cache (Anthropic cache_creation_input_tokens).
    cache_creation_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    total_tokens: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)

    @property
    def known(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None


@dataclass
class RequestInfo:
    """What the gateway needs to know about a request body."""

    model: str | None = None
    stream: bool = False
    # OpenAI-compatible only: the client asked for stream_options.include_usage itself.
    include_usage: bool | None = None
    parse_error: str | None = None
    # Sampling settings the body states (max_tokens, temperature, top_p), for telemetry.
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class ParseResult:
    """Facts read from a whole response body, or from a finished stream."""

    model: str | None = None
    usage: Usage = field(default_factory=Usage)
    # Streams: the family's own end marker was seen ([DONE], message_stop, done:true, ...).
    # Non-stream bodies: the body parsed as a complete document.
    complete: bool = False
    # A provider error: an error status body, or an error object inside a 200 stream.
    error: str | None = None
    # The body could not be parsed (malformed JSON, broken frames, bad checksum, ...).
    parse_error: str | None = None
    # Reassembled output text (assistant message), for the viewer; None when not applicable.
    text: str | None = None
    finish_reason: str | None = None
    response_id: str | None = None  # the provider's id of this response (chatcmpl-..., msg_...)


class StreamParser(Protocol):
    """Incremental parser of one streamed response. Fed raw *decoded* chunks (gzip already undone),
    split anywhere, even inside a UTF-8 sequence or an event-stream frame header."""

    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> ParseResult: ...

    def bound(self, limit: int) -> None:
        """Keep at most ``limit`` characters of reassembled text and ``limit`` bytes in any buffer."""
        ...


class Family(Protocol):
    """One wire-format family."""

    name: str

    def parse_request(self, path: str, body: bytes) -> RequestInfo:
        """Model and stream flag of a request. ``path`` includes the query string. Model may come
        from the path for Gemini (``/models/X:generateContent``) and Bedrock (``/model/X/converse``)."""
        ...

    def stream_kind(self, path: str, content_type: str) -> str | None:
        """The stream framing of a 2xx response ("sse", "ndjson", "json-array", "aws-eventstream"),
        or None when the response is a plain JSON document. Gemini's streamGenerateContent without
        alt=sse is a JSON array served as application/json: it is still a stream."""
        ...

    def parse_response(self, path: str, status: int, body: bytes) -> ParseResult:
        """A whole non-streamed body (success or error)."""
        ...

    def stream_parser(self, path: str, kind: str) -> StreamParser:
        ...

    def error_body(self, status: int, message: str, kind: str) -> tuple[bytes, str]:
        """A gateway-made error in this family's own JSON shape -> (body, content-type).
        ``kind`` is one of: "not_found" (no route for the URL), "rate_limited", "upstream_unavailable",
        "bad_request", "timeout"."""
        ...
