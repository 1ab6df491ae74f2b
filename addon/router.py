"""Router: decides which provider a flow is for and where it goes upstream.

One `regular`-mode listener serves two kinds of client:
- reverse mode: every origin-form request (``GET /<prefix>/<rest>``), whatever its ``Host`` header
  says, and absolute-form requests whose target is the gateway itself under any spelling (decided on
  the resolved address and the listen port, addon/netaddr.py); the request is rewritten onto
  ``<provider upstream><rest>`` (rest = path and query, unchanged);
- explicit mode: requests to a catalog host through the proxy (CONNECT + TLS interception, or
  absolute-form plain HTTP); they go to the provider's configured upstream when one is set.

Other absolute-form and CONNECT requests are proxied untouched and are not Corral's business (no
metadata, so never recorded). Unknown reverse prefixes are answered here with a 404 and never
forwarded, and the ``Host`` header of an origin-form request never chooses a destination: no open relay.
An upstream that is the gateway itself is refused (at start when configured, 508 per request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy import mode_specs

from addon import metadata as md, netaddr, request_form
from addon.credentials import AmbiguousCredential, credential_fingerprint, redact_headers, redact_url_path
from addon.request_info import read_request
from addon.responses import make_error
from addon.services import CatalogService
from addon.unified import embeddings, members as group_members, routing as unified
from addon.unified.groups import GroupBook
from providers.catalog import Provider
from providers.formats import get_family

logger = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
SELF_LOOP = "corral: the request's target is this gateway itself (it would loop through it)"


class Router:
    def __init__(self, catalog: CatalogService, groups: GroupBook | None = None) -> None:
        self.catalog = catalog
        self.groups = groups  # [models.<alias>]: model aliases and groups of the unified endpoint
        self.gateway_names: frozenset[str] = LOOPBACK_NAMES
        self.unified_keys: dict[str, str] = {}  # provider -> env variable holding its key

    def load(self, loader) -> None:
        request_form.install()
        loader.add_option(
            "corral_gateway_names", Sequence[str], [],
            "Extra host names that name the gateway itself (absolute-form requests to them are reverse mode); "
            "other names are resolved when the port is the gateway's.",
        )
        loader.add_option(
            "corral_unified_keys", str, "",
            "The unified /v1/chat/completions: provider keys as a JSON table {provider: \"env:VARIABLE\"} "
            "([unified] keys = { anthropic = \"env:ANTHROPIC_API_KEY\" }).",
        )
        loader.add_option(
            "corral_unified_forward_client_key", bool, True,
            "The unified /v1/chat/completions: a provider without a key in [unified] keys gets the client's "
            "bearer token, in the provider's own auth style; false: it gets no key.",
        )

    def configure(self, updated: set[str]) -> None:
        if "corral_gateway_names" in updated:
            names = {n.lower().rstrip(".") for n in ctx.options.corral_gateway_names}
            names.add(socket.gethostname().lower())
            self.gateway_names = LOOPBACK_NAMES | names
        if updated & {"corral_providers", "corral_gateway_intercept_hosts", "listen_port", "listen_host"}:
            self._refuse_self_upstream()
        if updated & {"corral_unified_keys", "corral_providers"}:
            try:
                self.unified_keys = unified.parse_keys(ctx.options.corral_unified_keys, self.catalog.current)
            except ValueError as e:
                raise exceptions.OptionsError(str(e)) from None

    def _refuse_self_upstream(self) -> None:
        """A configured upstream at the gateway's own listen address would send each request back into
        the gateway. Only upstreams set in [providers] count: a catalog default (llamacpp's
        127.0.0.1:8080 is also Corral's default port) is refused per request, when used."""
        port = ctx.options.listen_port
        for name in sorted(self.catalog.overridden_upstreams):
            provider = self.catalog.current.get(name)
            if provider is None:
                continue
            _scheme, host, up_port, _path, _hh = provider.upstream_target("")
            if up_port == port and self._names_this_machine(host, resolve=True):
                raise exceptions.OptionsError(
                    f"[providers.{name}] upstream = {provider.upstream!r} is this gateway's own listen address "
                    f"(port {port}): every request would loop back into Corral. Point it at the real server, "
                    "or run Corral on another port (--listen)."
                )

    def http_connect(self, flow: http.HTTPFlow) -> None:
        # A tunnel to the gateway's own port would let a client stack proxies inside one another.
        if self._port_is_mine(flow, flow.request.port) and self._names_this_machine(flow.request.host):
            flow.response = make_error(flow, 508, SELF_LOOP, "loop_detected")
        else:
            self._refuse_viewer(flow)

    def _refuse_viewer(self, flow: http.HTTPFlow) -> bool:
        """The viewer on loopback needs no token: reached through the proxy, a request comes from loopback
        too, so a proxy client (e.g. one with [gateway] proxyauth on a shared host) could read the record."""
        try:
            _host, port = netaddr.parse_hostport(ctx.options.corral_viewer_listen)
        except (AttributeError, ValueError):
            return False  # no viewer (empty listen), or not loaded (unit tests)
        if flow.request.port != port or not self._names_this_machine(flow.request.host):
            return False
        flow.response = make_error(flow, 403, "corral: the viewer is not reachable through the proxy; "
                                   "open it directly", "forbidden")
        return True

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or md.PROVIDER in flow.metadata:
            return  # answered or routed already (e.g. a replayed flow)
        sent = flow.request.headers.fields  # an immutable tuple: the client's headers, whatever is rewritten below
        if not request_form.is_origin_form(flow.request) and not flow.client_conn.tls and self._refuse_viewer(flow):
            return
        if self._origin_form_to_gateway(flow) or await self._absolute_form_to_gateway(flow):
            if not self._refuse_dot_segments(flow):
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
            if provider is not None and not self._refuse_dot_segments(flow):
                self._route_explicit(flow, provider)
        if md.is_llm_flow(flow):
            flow.metadata[md.CLIENT_HEADERS] = [
                [k, v] for k, v in redact_headers((_text(k), _text(v)) for k, v in sent)
            ]

    def request(self, flow: http.HTTPFlow) -> None:
        if md.INTERNAL in flow.metadata and flow.response is None:
            # No addon answered this /_corral/ path in requestheaders: it is not an endpoint.
            body = b'{"error": "corral: unknown endpoint"}'
            flow.response = http.Response.make(404, body, {"content-type": "application/json"})
            return
        if md.UNIFIED in flow.metadata and md.PROVIDER not in flow.metadata and flow.response is None:
            self._route_unified(flow)
        error = flow.metadata.get(md.ROUTE_ERROR)
        if error and flow.response is None:
            status, kind = (400, "bad_request") if md.PROVIDER in flow.metadata else (404, "not_found")
            flow.response = make_error(flow, status, error, kind)
            return
        if md.FORMAT in flow.metadata and flow.response is None and not md.unified_translated(flow):
            # Parsed once here, so every later addon (cache key, limits, meter) can use it (a translated
            # unified request: by UnifiedRequest, once it is the native one).
            info = read_request(get_family(flow.metadata[md.FORMAT]), flow.request.path, flow.request)
            flow.metadata[md.MODEL] = info.model
            flow.metadata[md.STREAM_REQUESTED] = info.stream
            if info.include_usage:
                flow.metadata[md.INCLUDE_USAGE_REQUESTED] = True
            if info.parse_error:
                flow.metadata[md.REQUEST_PARSE_ERROR] = info.parse_error
            if info.params:
                flow.metadata[md.REQUEST_PARAMS] = info.params

    # --- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _origin_form_to_gateway(flow: http.HTTPFlow) -> bool:
        """An origin-form request on a regular listener, not inside a CONNECT tunnel (there mitmproxy
        already set the tunnel's target as the destination): addressed to the gateway, whatever Host says."""
        return (
            request_form.is_origin_form(flow.request)
            and flow.server_conn.address is None
            and isinstance(flow.client_conn.proxy_mode, mode_specs.RegularMode)
        )

    async def _absolute_form_to_gateway(self, flow: http.HTTPFlow) -> bool:
        if flow.client_conn.tls or not self._port_is_mine(flow, flow.request.port):
            return False  # inside an intercepted TLS tunnel, or another port: an explicit-proxy request
        host = flow.request.host
        if self._names_this_machine(host):
            return True
        if netaddr.ip_literal(host) is not None:
            return False
        # A DNS name on the gateway's port: resolved off the event loop, as the upstream connect would.
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return False
        return any(self._names_this_machine(str(info[4][0])) for info in infos)

    @staticmethod
    def _port_is_mine(flow: http.HTTPFlow, port: int) -> bool:
        sockname = flow.client_conn.sockname
        return port == ctx.options.listen_port or bool(sockname and port == sockname[1])

    def _names_this_machine(self, host: str, resolve: bool = False) -> bool:
        """``host`` (an IP literal in any spelling, or a local name) reaches this machine. With ``resolve``
        (start-up only: it blocks) other names are looked up too."""
        ip = netaddr.ip_literal(host)
        if ip is not None:
            return netaddr.is_local_address(ip)
        name = host.lower().rstrip(".")
        if name in self.gateway_names or name.endswith(".localhost"):  # RFC 6761: *.localhost is loopback
            return True
        if not resolve:
            return False
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return False
        return any(self._names_this_machine(str(info[4][0])) for info in infos)

    @staticmethod
    def _refuse_dot_segments(flow: http.HTTPFlow) -> bool:
        """``/groq/../v1/x`` (or ``%2e%2e``): a server that resolves dot segments (RFC 3986, 5.2.4) would
        act on another path than the one routed, limited and recorded; refused instead of rewritten,
        since no SDK sends them."""
        path = flow.request.path.partition("?")[0]
        if "." not in path and "%" not in path:
            return False
        segments = path.replace("%2e", ".").replace("%2E", ".").split("/")
        if "." not in segments and ".." not in segments:
            return False
        flow.metadata[md.ROUTE_ERROR] = "corral: the path has '.' or '..' segments; send it resolved"
        flow.response = make_error(flow, 400, flow.metadata[md.ROUTE_ERROR], "bad_request")
        return True

    def _route_reverse(self, flow: http.HTTPFlow) -> None:
        flow.metadata[md.MODE] = "reverse"
        path, sep, query = flow.request.path.partition("?")
        prefix, _, remainder = path.lstrip("/").partition("/")
        rest = "/" + remainder + (sep + query)
        bare = path.rstrip("/")
        if bare in unified.ENDPOINTS and self.catalog.current.by_prefix(prefix) is None:
            self._unified_endpoint(flow, bare)
            return
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
        flow.metadata[md.GATEWAY_PATH] = redact_url_path(flow.request.path)
        if not provider.reverse:
            flow.metadata[md.ROUTE_ERROR] = (
                f"corral: {provider.name} requests are signed for the provider's own host "
                "(AWS SigV4), so they cannot be re-addressed in reverse mode; send them through "
                "Corral as an explicit proxy instead (HTTPS_PROXY, see `corral env`)"
            )
            return
        self._rewrite(flow, provider, rest)

    def _unified_endpoint(self, flow: http.HTTPFlow, path: str) -> None:
        """``/v1/models`` is answered here; ``/v1/chat/completions`` is routed in ``request``, once the
        body names the model."""
        if path == unified.MODELS_PATH and flow.request.method in ("GET", "HEAD"):
            aliases = self.groups.aliases() if self.groups is not None else ()
            flow.response = http.Response.make(200, unified.models_body(self.catalog.current, aliases),
                                               {"content-type": "application/json"})
        elif path == unified.CHAT_PATH and flow.request.method == "POST":
            flow.metadata[md.UNIFIED] = {"endpoint": "chat.completions"}
        elif path == unified.EMBEDDINGS_PATH and flow.request.method == "POST":
            flow.metadata[md.UNIFIED] = {"endpoint": "embeddings"}
        else:
            flow.response = make_error(flow, 405, f"corral: {flow.request.method} is not allowed on {path}",
                                       "method_not_allowed")

    def _route_unified(self, flow: http.HTTPFlow) -> None:
        meta = flow.metadata
        try:
            body = json.loads(flow.request.get_content(strict=False) or b"")
        except ValueError as e:
            meta[md.ROUTE_ERROR] = f"corral: the request body is not JSON: {e}"
            return
        if not isinstance(body, dict):
            body = {}
        requested = body.get("model")
        chat = meta[md.UNIFIED]["endpoint"] == "chat.completions"
        group = self.groups.groups.get(requested) if self.groups is not None and isinstance(requested, str) else None
        if group is not None and not chat:
            meta[md.ROUTE_ERROR] = (f"corral: model group {requested!r} applies to /v1/chat/completions only; "
                                    "name the embeddings model as '<provider>/<model>'")
            return
        order: list[Any] = self.groups.order(group) if group is not None and self.groups is not None else [requested]
        try:
            if chat:
                target = unified.resolve(self.catalog.current, order[0], body.get("stream") is True)
            else:
                target = embeddings.resolve(self.catalog.current, requested)
        except unified.UnknownModel as e:
            meta[md.ROUTE_ERROR] = str(e)
            return
        provider = target.provider
        meta[md.UNIFIED] = {**meta[md.UNIFIED], "requested_model": requested, "native_model": target.model,
                            "translate": target.translate}
        if group is not None:
            self._prepare_group(flow, group.alias, order, body)
        env = self.unified_keys.get(provider.name)
        unified.place_key(flow.request.headers, provider, os.environ.get(env) if env else None,
                          ctx.options.corral_unified_forward_client_key)
        if target.translate is None:
            body["model"] = target.model
            flow.request.content = json.dumps(body).encode()
            meta.setdefault(md.CHANGES, []).append(
                f"unified endpoint: model {requested!r} sent to {provider.name} as {target.model!r}")
        self._set_provider(flow, provider, target.path)
        # The native request (as recorded) through the provider's own prefix: "copy as curl" replays it.
        meta[md.GATEWAY_PATH] = f"/{provider.prefix}{target.path}"
        if md.ROUTE_ERROR not in meta:
            self._rewrite(flow, provider, target.path)

    def _prepare_group(self, flow: http.HTTPFlow, alias: str, order: list[str], body: dict) -> None:
        """A model group: the first target is routed as usual; the others get their native requests now,
        from the client's OpenAI request, for the retry relay to fall back to."""
        assert self.groups is not None
        meta = flow.metadata
        meta[md.UNIFIED].update(alias=alias, targets=order, answered_by=order[0])
        meta[md.UNIFIED_STREAM] = {"stream": body.get("stream") is True,
                                   "include_usage": bool((body.get("stream_options") or {}).get("include_usage"))}
        members, notes = group_members.prepare(
            self.catalog.current, order[1:], body, flow.request.headers, self.unified_keys,
            ctx.options.corral_unified_forward_client_key, ctx.options.corral_usage_inject)
        if members:
            self.groups.pending[flow] = members
        meta.setdefault(md.CHANGES, []).extend(
            [f"model group {alias!r}: targets tried in this order: {', '.join(order)}", *notes])

    def _route_explicit(self, flow: http.HTTPFlow, provider: Provider) -> None:
        # A connection redirected by `corral run --capture` (mitmproxy's local mode) asked no proxy at all.
        local = isinstance(flow.client_conn.proxy_mode, mode_specs.LocalMode)
        flow.metadata[md.MODE] = "capture" if local else "explicit"
        self._set_provider(flow, provider, flow.request.path)
        overridden = provider.name in self.catalog.overridden_upstreams
        if provider.reverse and (overridden or not provider.per_host):
            # The same provider and upstream path through Corral's reverse mode (copy as curl).
            flow.metadata[md.GATEWAY_PATH] = f"/{provider.prefix}{redact_url_path(flow.request.path)}"
        if overridden:
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
        try:
            flow.metadata[md.CREDENTIAL] = credential_fingerprint(req.headers.fields, query, provider.auth)
        except AmbiguousCredential as e:
            flow.metadata[md.CREDENTIAL] = None
            flow.metadata[md.ROUTE_ERROR] = f"{e}: the provider would read one of them, Corral cannot tell which"

    def _rewrite(self, flow: http.HTTPFlow, provider: Provider, rest: str) -> None:
        scheme, host, port, path, host_header = provider.upstream_target(rest)
        if self._port_is_mine(flow, port) and self._names_this_machine(host):
            flow.response = make_error(
                flow, 508, f"corral: {provider.name}'s upstream {provider.upstream} is this gateway itself; "
                f"set [providers.{provider.name}] upstream to the real server", "loop_detected")
            return
        req = flow.request
        req.scheme, req.host, req.port, req.path = scheme, host, port, path
        # Origin-form on the wire, and a Host header naming the upstream (SNI follows host).
        req.authority = ""
        req.host_header = host_header
        flow.metadata[md.UPSTREAM] = f"{scheme}://{host_header}"


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")  # as mitmproxy's Headers decode their fields
