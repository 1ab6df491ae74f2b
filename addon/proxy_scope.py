"""ProxyScope: what Corral does as an explicit proxy, and for whom.

- Only catalog hosts are intercepted: mitmproxy's ``allow_hosts`` is set to the catalog's anchored host
  regexes (plus ``[gateway] intercept_hosts``). Every other CONNECT becomes a raw TCP tunnel: not
  decrypted, no flow, never recorded. Reverse-mode requests are unaffected: mitmproxy decides
  ``allow_hosts`` per connection from the server address, and an origin-form request to the gateway
  has none when the decision is made (addons/next_layer.py ``_ignore_connection``).
- Not an open proxy: listening beyond loopback needs ``proxyauth`` (``[gateway] proxyauth``) or an
  explicit ``[gateway] allow_open_proxy = true``.
- Upstream TLS is verified; ``[gateway] upstream_ca`` (testing only) trusts one more CA file.
- WebSocket sessions (realtime APIs) keep only their last messages in memory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy import mode_specs

from addon import ca, netaddr
from addon.services import CatalogService

logger = logging.getLogger(__name__)

PROXY_MODES = (mode_specs.RegularMode, mode_specs.UpstreamMode, mode_specs.Socks5Mode)


def open_listeners(modes: list[str], default_host: str) -> list[str]:
    """Listeners that proxy to any host (regular, upstream, socks5) bound beyond loopback."""
    found = []
    for spec in modes:
        mode = mode_specs.ProxyMode.parse(spec)
        if not isinstance(mode, PROXY_MODES):
            continue  # reverse forwards only to its one target; local/transparent see this machine only
        host = mode.listen_host(default_host)
        if not netaddr.is_loopback(host):
            found.append(f"{spec} on {host or 'every interface'}")
    return found


class ProxyScope:
    def __init__(self, catalog: CatalogService) -> None:
        self.catalog = catalog  # says which hosts are intercepted

    def load(self, loader) -> None:
        loader.add_option(
            "corral_gateway_certs", str, "",
            "CA directory used by `corral start`/`corral env`/`corral certs` (becomes mitmproxy's confdir). "
            "Under mitmdump/mitmweb use --set confdir=DIR instead.",
        )
        loader.add_option(
            "corral_gateway_proxyauth", str, "",
            "Proxy authentication, copied to mitmproxy's proxyauth: \"user:pass\", \"@htpasswd-file\", ... "
            "`corral env` puts user:pass into the proxy URLs.",
        )
        loader.add_option(
            "corral_gateway_allow_open_proxy", bool, False,
            "Allow listening beyond loopback without proxy authentication (an open proxy to every host).",
        )
        loader.add_option(
            "corral_gateway_upstream_ca", str, "",
            "TESTING ONLY: a CA file trusted for upstream TLS instead of the system roots "
            "(mitmproxy's ssl_verify_upstream_trusted_ca).",
        )
        loader.add_option(
            "corral_gateway_websocket_messages", int, 100,
            "WebSocket messages kept in memory per session (older ones are dropped; the session goes on).",
        )

    def configure(self, updated: set[str]) -> None:
        self._refuse_open_proxy()  # first: on any change, listen_host/mode/proxyauth may have opened it up
        if "corral_providers" in updated or "corral_gateway_intercept_hosts" in updated:
            ctx.options.allow_hosts = self.catalog.current.intercept_regexes()
        if "corral_gateway_proxyauth" in updated and ctx.options.corral_gateway_proxyauth:
            ctx.options.proxyauth = ctx.options.corral_gateway_proxyauth
        if "corral_gateway_upstream_ca" in updated and ctx.options.corral_gateway_upstream_ca:
            path = os.path.expanduser(ctx.options.corral_gateway_upstream_ca)
            if not os.path.isfile(path):
                raise exceptions.OptionsError(f"[gateway] upstream_ca: no such file: {path}")
            logger.warning("corral: upstream TLS trusts %s instead of the system roots (testing only)", path)
            ctx.options.ssl_verify_upstream_trusted_ca = path
        if "corral_gateway_websocket_messages" in updated and ctx.options.corral_gateway_websocket_messages < 1:
            raise exceptions.OptionsError("[gateway] websocket_messages: expected at least 1, "
                                          f"got {ctx.options.corral_gateway_websocket_messages}")
        if "corral_gateway_certs" in updated and ctx.options.corral_gateway_certs:
            certs = os.path.abspath(os.path.expanduser(ctx.options.corral_gateway_certs))
            if certs != os.path.abspath(os.path.expanduser(ctx.options.confdir)):
                logger.warning("corral: [gateway] certs is %s but mitmproxy's confdir is %s; "
                               "under mitmdump/mitmweb pass --set confdir=%s", certs, ctx.options.confdir, certs)

    def _refuse_open_proxy(self) -> None:
        if ctx.options.proxyauth or ctx.options.corral_gateway_allow_open_proxy:
            return
        try:
            listeners = open_listeners(list(ctx.options.mode), ctx.options.listen_host)
        except ValueError:
            return  # an invalid mode spec is mitmproxy's to report
        if listeners:
            raise exceptions.OptionsError(
                f"refusing to listen beyond loopback ({', '.join(listeners)}) without proxy "
                "authentication: anyone who can reach the port could tunnel anywhere through it. Set "
                "[gateway] proxyauth = \"user:pass\" (or --set proxyauth=...), listen on 127.0.0.1, "
                "or set [gateway] allow_open_proxy = true if the network is yours alone."
            )

    def running(self) -> None:
        # mitmproxy writes the CA key 0600; a copied or restored certs/ may not be, so check every start.
        for path in ca.secure_keys(ca.CaFiles(Path(ctx.options.confdir).expanduser())):
            logger.warning("corral: %s was readable by others; now mode 0600", path)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        # mitmproxy keeps every message of a session: a long realtime session would grow without bound.
        messages = flow.websocket.messages if flow.websocket else None
        keep = ctx.options.corral_gateway_websocket_messages
        if messages is not None and len(messages) > keep:
            del messages[:-keep]
