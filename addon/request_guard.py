"""RequestGuard: refuses request heads no provider client sends, before any work grows with them.

- More than ``[gateway] max_headers`` header fields or ``[gateway] max_header_bytes`` of them: 431.
  mitmproxy caps neither, and every later hook walks the headers at least once.
- A header value holding a CR, LF (an obsolete line folding) or NUL byte: 400. mitmproxy's HTTP/1
  parser keeps them inside the value; a server behind Corral may split the header there.
- Loops: every request Corral sends on carries ``corral-hop: <this gateway's id>`` (not an
  ``x-corral-*`` header, which Corral strips before upstream); a request that arrives with this
  gateway's own id already in it came back around (an upstream or DNS name pointing at Corral itself)
  and gets a 508 instead of another trip. The header is removed from what comes back. Other Corral
  instances (a chain of gateways) have their own ids and pass.

Answers use the provider's error shape (the Router, before this addon, has set the flow's format).
Every check is one pass over ``headers.fields``: mitmproxy's ``Headers.items()`` is quadratic.
"""

from __future__ import annotations

import hashlib
import re
import socket

from mitmproxy import ctx, exceptions, http

from addon.responses import make_error

HOP_HEADER = "corral-hop"
_HOP_HEADER_B = HOP_HEADER.encode()
MAX_HOPS = 10  # a longer chain of gateways is a loop between several of them
_BAD_VALUE = re.compile(rb"[\r\n\x00]")


def gateway_id(host: str, port: int) -> str:
    """Stable per listener (the workers of one `corral start` share it), distinct between gateways."""
    seed = f"{socket.gethostname()}|{host}|{port}".encode()
    return hashlib.sha256(seed).hexdigest()[:12]


class RequestGuard:
    def __init__(self) -> None:
        self.hop_id = gateway_id("", 0)

    def load(self, loader) -> None:
        loader.add_option(
            "corral_gateway_max_headers", int, 100,
            "Most header fields a request may carry; more are answered 431.",
        )
        loader.add_option(
            "corral_gateway_max_header_bytes", int, 32 * 1024,
            "Most bytes all header fields of a request may take (names, values, separators); more: 431.",
        )

    def configure(self, updated: set[str]) -> None:
        for name in ("corral_gateway_max_headers", "corral_gateway_max_header_bytes"):
            if name in updated and getattr(ctx.options, name) < 1:
                raise exceptions.OptionsError(f"[gateway] {name.removeprefix('corral_gateway_')} must be at least 1")
        if updated & {"listen_host", "listen_port"}:
            self.hop_id = gateway_id(ctx.options.listen_host, ctx.options.listen_port)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        refusal = self._refusal(flow.request.headers.fields)
        if refusal is not None:
            status, message, kind = refusal
            flow.response = make_error(flow, status, message, kind, {"connection": "close"})
            return
        hops = flow.request.headers.get(HOP_HEADER)
        flow.request.headers[HOP_HEADER] = f"{hops}, {self.hop_id}" if hops else self.hop_id

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and HOP_HEADER in flow.response.headers:
            del flow.response.headers[HOP_HEADER]

    def _refusal(self, fields: tuple[tuple[bytes, bytes], ...]) -> tuple[int, str, str] | None:
        limit = ctx.options.corral_gateway_max_headers
        if len(fields) > limit:
            return 431, f"corral: the request has {len(fields)} header fields; at most {limit} are accepted", \
                "bad_request"
        budget = ctx.options.corral_gateway_max_header_bytes
        size = 0
        hops: list[bytes] = []
        for name, value in fields:
            size += len(name) + len(value) + 4  # ": " and CRLF
            if _BAD_VALUE.search(value):
                shown = name.decode("ascii", "replace")[:64]
                return 400, f"corral: header {shown!r} holds a CR, LF or NUL byte", "bad_request"
            if name.lower() == _HOP_HEADER_B:
                hops.append(value)
        if size > budget:
            return 431, f"corral: the request's header fields take {size} bytes; at most {budget} are accepted", \
                "bad_request"
        if hops:
            seen = [h.strip() for v in hops for h in v.split(b",")]
            if self.hop_id.encode() in seen or len(seen) >= MAX_HOPS:
                return 508, "corral: the request came back to this gateway (a forwarding loop); check the " \
                    "upstream it was sent to", "loop_detected"
        return None
