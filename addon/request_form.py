"""Which form of request-target an HTTP/1 request arrived in (RFC 9112, section 3.2).

``GET /openai/v1/models`` (origin-form) is a request *to the gateway*; ``GET http://host/x``
(absolute-form) and ``CONNECT host:443`` are requests *through* it. mitmproxy's regular mode fills in
the destination of an origin-form request from its ``Host`` header and then clears the target's
authority for both forms before any hook runs, so an addon can no longer tell them apart. Left like
that, ``Host: 10.0.0.5:9999`` on an origin-form request would make the gateway a relay to any host its
clients name (SSRF behind a Host-preserving front proxy), and ``Host: 127.1:<port>`` a loop into itself.

``install()`` wraps mitmproxy's HTTP/1 request-head parser once, to note the form on the parsed
request; ``is_origin_form`` reads the note. HTTP/2 and HTTP/3 have no origin-form on a plain listener
(h2c is disabled): their requests arrive inside intercepted tunnels, i.e. through the proxy.
"""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.net.http import http1

_MARK = "_corral_origin_form"


def _read_request_head(lines: list[bytes], _parse=http1.read_request_head) -> http.Request:
    request = _parse(lines)
    # The parser leaves host empty exactly for origin-form (and asterisk-form, `OPTIONS *`) targets.
    setattr(request, _MARK, not request.data.host and request.method != "CONNECT")
    return request


def install() -> None:
    """Idempotent: mitmproxy's HTTP/1 server layer looks the parser up on the module at every request."""
    if http1.read_request_head is not _read_request_head:
        http1.read_request_head = _read_request_head


def is_origin_form(request: http.Request) -> bool:
    return bool(getattr(request, _MARK, False))
