"""How a response body travels to the client: held whole or streamed, and its framing when Corral
changes it.

mitmproxy holds a response until its last byte unless ``flow.response.stream`` is set, so a streamed
text-to-speech answer or a file download would reach the client only when complete. Only a small JSON
answer of known length is held (the meter parses it, the cache keys on it, nothing waits noticeably);
every other body streams chunk by chunk, with the meter's tee watching what goes by.
"""

from __future__ import annotations

from collections.abc import Mapping

from mitmproxy import http

# Largest known-length JSON body that is held whole instead of streamed.
SMALL_BODY = 1 << 20


def media_type(headers: http.Headers | Mapping[str, str]) -> str:
    """``type/subtype`` of a Content-Type, lowercase, parameters dropped ("" when absent)."""
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json(mtype: str) -> bool:
    return mtype == "application/json" or mtype.endswith("+json") or mtype == "text/json"


def answer_has_body(method: str, status: int) -> bool:
    return method.upper() != "HEAD" and not (100 <= status < 200 or status in (204, 304))


def has_body(flow: http.HTTPFlow) -> bool:
    return flow.response is not None and answer_has_body(flow.request.method, flow.response.status_code)


def known_length(headers: http.Headers | Mapping[str, str]) -> int | None:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return None
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def streams_answer(method: str, status: int, headers: http.Headers | Mapping[str, str]) -> bool:
    """Stream unless the body is small, of known length and JSON (or there is no body at all).
    Also decides whether the relay's in-request short cut may hold an answer (addon/relay/inline.py)."""
    if not answer_has_body(method, status):
        return False
    length = known_length(headers)
    return length is None or length > SMALL_BODY or not is_json(media_type(headers))


def should_stream(flow: http.HTTPFlow) -> bool:
    response = flow.response
    if response is None or response.raw_content is not None:
        return False  # made in process (a cache hit, an inline answer, an error): already whole
    return streams_answer(flow.request.method, response.status_code, response.headers)


def reframe_for_rewrite(flow: http.HTTPFlow) -> bool:
    """The body is about to change length on its way to the client: drop the upstream's
    Content-Length (the client would wait for bytes that never come) and, for an HTTP/1.1 client,
    send chunked. Returns True when the framing was changed."""
    response = flow.response
    if response is None or "content-length" not in response.headers:
        return False
    del response.headers["content-length"]
    if flow.request.http_version == "HTTP/1.1" and "chunked" not in response.headers.get("transfer-encoding", ""):
        response.headers["transfer-encoding"] = "chunked"
    return True
