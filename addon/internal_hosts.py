"""InternalHosts: Corral's own endpoints on the gateway port (``/_corral/...``) answer only a ``Host`` that
names this machine, as the viewer does (addon/hostcheck.py): a DNS-rebinding page must not read them.

Right after the Router, which marks such requests (``corral.internal``), and before the addon that owns
the endpoint answers it in ``requestheaders``.
"""

from __future__ import annotations

import json

from mitmproxy import ctx, http

from addon import hostcheck, metadata as md


class InternalHosts:
    def __init__(self) -> None:
        self.policy = hostcheck.HostPolicy()

    def configure(self, updated: set[str]) -> None:
        # [viewer] hosts (declared by the Viewer) and the names the gateway itself is reached by.
        if "corral_viewer_hosts" in updated or "corral_gateway_names" in updated:
            names = list(ctx.options.corral_viewer_hosts)
            if "corral_gateway_names" in ctx.options:
                names += ctx.options.corral_gateway_names
            self.policy = hostcheck.policy(names)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if md.INTERNAL not in flow.metadata or flow.response is not None:
            return
        sockname = flow.client_conn.sockname
        local, port = (str(sockname[0]), sockname[1]) if sockname else (None, None)
        host = flow.request.host_header
        if not self.policy.allows(host, port, local):
            body = json.dumps({"error": hostcheck.REFUSED.format(host=(host or "")[:200])})
            flow.response = http.Response.make(403, body, {"content-type": "application/json"})
