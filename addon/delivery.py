"""How a response body travels to the client: held whole or streamed, and its framing when Corral
changes it.

mitmproxy holds a response until its last byte unless ``flow.response.stream`` is set, so a streamed
text-to-speech answer or a file download would reach the client only when complete. Only a small JSON
answer of known length is held (the meter parses it, the cache keys on it, nothing waits noticeably);
every other body streams chunk by chunk, with the meter's tee watching what goes by.
"""

from __future__ import annotations

from mitmproxy import http

# Largest known-length JSON body that is held whole instead of streamed.
SMALL_BODY = 1 << 20


def media_type(headers: http.Headers) -> str:
    """``type/subtype`` of a Content-Type, lowercase, parameters dropped ("" when absent)."""
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json(mtype: str) -> bool:
    return mtype == "application/json" or mtype.endswith("+json") or mtype == "text/json"


def has_body(flow: http.HTTPFlow) -> bool:
    response = flow.response
    if response is None or flow.request.method.upper() == "HEAD":
        return False
    return not (100 <= response.status_code < 200 or response.status_code in (204, 304))


def known_length(response: http.Response) -> int | None:
    if "chunked" in response.headers.get("transfer-encoding", "").lower():
        return None
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def should_stream(flow: http.HTTPFlow) -> bool:
    """Stream unless the body is small, of known length and JSON (or there is no body at all)."""
    if flow.response is None or not has_body(flow):
        return False
    length = known_length(flow.response)
    return length is None or length > SMALL_BODY or not is_json(media_type(flow.response.headers))


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
