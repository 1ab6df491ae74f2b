"""Viewer: the static web UI in ``web/`` plus a read-only JSON API and ``/metrics``, on a port of its own.

A tornado server (tornado ships with mitmproxy) started in ``running()`` on mitmproxy's own event
loop, so it works the same under `corral start`, ``mitmdump -s`` and ``mitmweb -s``. It never touches
flows; it reads the database the Recorder writes, with every query on a worker thread
(``asyncio.to_thread``), so a slow query never stalls a flow.

Off loopback it needs a token: ``[viewer] listen = "0.0.0.0:8082"`` without ``[viewer] token`` is
refused at configure time, before anything listens. Every answer carries security headers (a
Content-Security-Policy without inline script among them), and a ``Host`` that does not name this
machine or a ``[viewer] hosts`` entry is refused with 403, so a DNS-rebinding page cannot read the
record (addon/hostcheck.py, addon/viewer/security.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mitmproxy import ctx
from prometheus_client import CollectorRegistry
from tornado.httpserver import HTTPServer

from addon import hostcheck, paths
from addon.keys.admin import KeyAdmin
from addon.storage import db as dbmod
from addon.storage.models import database_proxy
from addon.viewer.api import make_app
from addon.viewer.auth import check_listen

logger = logging.getLogger(__name__)

WEB_DIR = paths.web_dir()
DEFAULT_LISTEN = "127.0.0.1:8082"  # 8081 is mitmweb's own UI


class Viewer:
    def __init__(self, registry: CollectorRegistry | None = None, admin: KeyAdmin | None = None) -> None:
        self.registry = registry  # what /metrics serves: the Metrics addon counts into it
        self.admin = admin  # who may create, revoke and rotate gateway keys over the API (None: nobody)
        self.server: HTTPServer | None = None
        self.address: tuple[str, int] | None = None
        self.bound: tuple[str, int] | None = None
        self.hosts = hostcheck.HostPolicy()

    def load(self, loader) -> None:
        loader.add_option(
            "corral_viewer_listen", str, DEFAULT_LISTEN,
            "HOST:PORT of the web viewer, its JSON API and /metrics. Empty: no viewer.",
        )
        loader.add_option(
            "corral_viewer_token", str, "",
            "Token the API needs (Authorization: Bearer <token> or ?token=); required off loopback.",
        )
        loader.add_option(
            "corral_viewer_hosts", Sequence[str], [],
            "Host names (NAME or NAME:PORT) the viewer and /_corral/ endpoints answer besides localhost and "
            "this machine's addresses; any other Host header gets 403 (DNS rebinding).",
        )

    def configure(self, updated: set[str]) -> None:
        if "corral_viewer_hosts" in updated:
            self.hosts = hostcheck.policy(ctx.options.corral_viewer_hosts)
        if "corral_viewer_listen" in updated or "corral_viewer_token" in updated:
            address = check_listen(ctx.options.corral_viewer_listen, ctx.options.corral_viewer_token)
            changed, self.address = address != self.address, address
            if changed and self.server is not None:  # moved while running (e.g. mitmweb's options page)
                self._stop()
                self._start()

    def running(self) -> None:
        if self.server is None:
            self._start()

    def done(self) -> None:
        self._stop()

    def _database(self):
        """The Recorder's database (same process); opened here only when no Recorder is loaded."""
        if database_proxy.obj is None:
            url = getattr(ctx.options, "corral_storage_db", "") or paths.default_db_url()
            dbmod.connect(url)
        return database_proxy

    def _start(self) -> None:
        if self.address is None:
            return
        try:
            self._database()
        except dbmod.DatabaseError as e:
            logger.error("corral: viewer has no database: %s", e)
            return
        app = make_app(self, WEB_DIR)
        server = HTTPServer(app, xheaders=False)
        host, port = self.address
        try:
            server.listen(port, address=host)
        except OSError as e:
            # The gateway matters more than its viewer: say so loudly and keep proxying.
            logger.warning("corral: viewer could not listen on %s:%d: %s (gateway keeps running)", host, port, e)
            return
        self.server = server
        sock = next(iter(server._sockets.values()))
        self.bound = sock.getsockname()[:2]
        logger.info("corral: viewer on http://%s:%d/", host, self.bound[1])

    def _stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
            self.bound = None

    def host_allowed(self, host: str | None, connected: str | None) -> bool:
        return self.hosts.allows(host, self.bound[1] if self.bound else None, connected)

    def token(self) -> str:
        return ctx.options.corral_viewer_token
