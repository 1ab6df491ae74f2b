"""Router: decides which provider a flow is for and where it goes upstream.

One `regular`-mode listener serves two kinds of client:
- reverse mode: origin-form requests addressed to the gateway itself, ``/<prefix>/<rest>``; the
  request is rewritten onto ``<provider upstream><rest>`` (rest = path and query, unchanged);
- explicit mode: requests to a catalog host through the proxy (CONNECT + TLS interception, or
  absolute-form plain HTTP); they go to the provider's configured upstream when one is set.

Anything else is left untouched and is not Corral's business (no metadata, so never recorded).
Unknown reverse prefixes are answered here with a 404 and never forwarded: no open relay.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

from mitmproxy import ctx, http

from addon import metadata as md
from addon.credentials import credential_fingerprint
from addon.request_info import read_request
from addon.responses import make_error
from addon.services import CatalogService
from providers.catalog import Provider
from providers.formats import get_family

logger = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


class Router:
    def __init__(self, catalog: CatalogService) -> None:
        self.catalog = catalog
        self.gateway_names: frozenset[str] = LOOPBACK_NAMES

    def load(self, loader) -> None:
        loader.add_option(
            "corral_gateway_names", Sequence[str], [],
            "Extra host names clients use to reach the gateway itself (reverse mode), e.g. a DNS name.",
        )

    def configure(self, updated: set[str]) -> None:
        if "corral_gateway_names" in updated:
            names = {n.lower() for n in ctx.options.corral_gateway_names}
            names.add(socket.gethostname().lower())
            self.gateway_names = LOOPBACK_NAMES | names

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or md.PROVIDER in flow.metadata:
            return  # answered or routed already (e.g. a replayed flow)
        if self._addressed_to_gateway(flow):
            self._route_reverse(flow)
        else:
            provider = self.catalog.current.by_host(flow.request.host, flow.request.port)
            plain_http = not flow.client_conn.tls and flow.request.scheme == "http" and flow.request.port == 80
            if provider is None and plain_http:
                # Absolute-form plain HTTP (`http://api.openai.com/...` through the proxy): same provider
                # as its :443 host; _route_explicit sends it on over TLS unless the upstream is overridden.
                provider = self.catalog.current.by_host(flow.request.host, 443)
                if provider is not None:
                    flow.request.scheme, flow.request.port = "https", 443
            if provider is not None:
                self._route_explicit(flow, provider)

    def request(self, flow: http.HTTPFlow) -> None:
        if md.INTERNAL in flow.metadata and flow.response is None:
            # No addon answered this /_corral/ path in requestheaders: it is not an endpoint.
            body = b'{"error": "corral: unknown endpoint"}'
            flow.response = http.Response.make(404, body, {"content-type": "application/json"})
            return
        error = flow.metadata.get(md.ROUTE_ERROR)
        if error and flow.response is None:
            status, kind = (400, "bad_request") if md.PROVIDER in flow.metadata else (404, "not_found")
            flow.response = make_error(flow, status, error, kind)
            return
        if md.FORMAT in flow.metadata and flow.response is None:
            # Parsed once here, so every later addon (cache key, limits, meter) can use it.
            info = read_request(get_family(flow.metadata[md.FORMAT]), flow.request.path, flow.request)
            flow.metadata[md.MODEL] = info.model
            flow.metadata[md.STREAM_REQUESTED] = info.stream
            if info.include_usage:
                flow.metadata[md.INCLUDE_USAGE_REQUESTED] = True
            if info.parse_error:
                flow.metadata[md.REQUEST_PARSE_ERROR] = info.parse_error

    # --- helpers -----------------------------------------------------------------------------

    def _addressed_to_gateway(self, flow: http.HTTPFlow) -> bool:
        if flow.client_conn.tls:
            return False  # inside an intercepted TLS tunnel: an explicit-proxy client
        sockname = flow.client_conn.sockname
        if not sockname or flow.request.port != sockname[1]:
            return False
        host = flow.request.host.lower()
        return host in self.gateway_names or host == str(sockname[0])

    def _route_reverse(self, flow: http.HTTPFlow) -> None:
        flow.metadata[md.MODE] = "reverse"
        path, sep, query = flow.request.path.partition("?")
        prefix, _, remainder = path.lstrip("/").partition("/")
        rest = "/" + remainder + (sep + query)
        if prefix == md.INTERNAL_PREFIX:
            # Corral's own endpoints (/_corral/...): answered in-band by the addon that owns them.
            flow.metadata[md.INTERNAL] = "/" + remainder
            return
        provider = self.catalog.current.by_prefix(prefix)
        if provider is None:
            shown = prefix[:64] or "(empty)"
            flow.metadata[md.ROUTE_ERROR] = (
                f"corral: unknown route prefix '/{shown}/'; use /<provider>/... "
                "(see `corral providers`)"
            )
            return
        self._set_provider(flow, provider, rest)
        if not provider.reverse:
            flow.metadata[md.ROUTE_ERROR] = (
                f"corral: {provider.name} requests are signed for the provider's own host "
                "(AWS SigV4), so they cannot be re-addressed in reverse mode; send them through "
                "Corral as an explicit proxy instead (HTTPS_PROXY, see `corral env`)"
            )
            return
        self._rewrite(flow, provider, rest)

    def _route_explicit(self, flow: http.HTTPFlow, provider: Provider) -> None:
        flow.metadata[md.MODE] = "explicit"
        self._set_provider(flow, provider, flow.request.path)
        if provider.name in self.catalog.overridden_upstreams:
            self._rewrite(flow, provider, flow.request.path)
        else:
            flow.metadata[md.UPSTREAM] = f"{flow.request.scheme}://{flow.request.host}:{flow.request.port}"

    def _set_provider(self, flow: http.HTTPFlow, provider: Provider, rest: str) -> None:
        flow.metadata[md.PROVIDER] = provider.name
        flow.metadata[md.FORMAT] = self.catalog.current.format_for(provider, rest)
        if flow.request.method == "POST" and self.catalog.current.takes_include_usage(provider, rest):
            flow.metadata[md.INCLUDE_USAGE_ENDPOINT] = True
        req = flow.request
        query = req.query.items(multi=True) if "?" in req.path else ()  # parsing an absent query costs too
        flow.metadata[md.CREDENTIAL] = credential_fingerprint(req.headers.items(), query)

    @staticmethod
    def _rewrite(flow: http.HTTPFlow, provider: Provider, rest: str) -> None:
        scheme, host, port, path, host_header = provider.upstream_target(rest)
        req = flow.request
        req.scheme, req.host, req.port, req.path = scheme, host, port, path
        # Origin-form on the wire, and a Host header naming the upstream (SNI follows host).
        req.authority = ""
        req.host_header = host_header
        flow.metadata[md.UPSTREAM] = f"{scheme}://{host_header}"
