"""Viewer: the static web UI in ``web/`` plus a read-only JSON API and ``/metrics``, on a port of its own.

A tornado server (tornado ships with mitmproxy) started in ``running()`` on mitmproxy's own event
loop, so it works the same under `corral start`, ``mitmdump -s`` and ``mitmweb -s``. It never touches
flows; it reads the database the Recorder writes, with every query on a worker thread
(``asyncio.to_thread``), so a slow query never stalls a flow.

Off loopback it needs a token: ``[viewer] listen = "0.0.0.0:8082"`` without ``[viewer] token`` is
refused at configure time, before anything listens.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from mitmproxy import ctx, exceptions

from addon import paths
from addon.storage import db as dbmod
from addon.storage.models import database_proxy

logger = logging.getLogger(__name__)

WEB_DIR = paths.PACKAGE_ROOT / "web"
DEFAULT_LISTEN = "127.0.0.1:8082"  # 8081 is mitmweb's own UI


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise exceptions.OptionsError(f"corral_viewer_listen must be HOST:PORT (or empty to turn the viewer off), got {value!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and "localhost" are loopback; "", 0.0.0.0 and any other name are not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(listen: str, token: str) -> tuple[str, int] | None:
    """The address to listen on (None: viewer off). Raises OptionsError off loopback without a token."""
    if not listen:
        return None
    host, port = parse_listen(listen)
    if not is_loopback(host) and not token:
        raise exceptions.OptionsError(
            f"the viewer would listen on {listen}, which is not loopback: set [viewer] token "
            "(corral_viewer_token) so the API needs it, or listen on 127.0.0.1"
        )
    return host, port


def token_ok(expected: str, authorization: str | None, query_token: str | None) -> bool:
    """Bearer header or ?token=, compared in constant time. No token configured: everything passes."""
    if not expected:
        return True
    given = ""
    if authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    elif query_token:
        given = query_token
    return hmac.compare_digest(given.encode(), expected.encode())


class Viewer:
    def __init__(self, metrics=None) -> None:
        self.metrics = metrics  # the Metrics addon whose registry /metrics serves
        self.server = None
        self.address: tuple[str, int] | None = None
        self.bound: tuple[str, int] | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "corral_viewer_listen", str, DEFAULT_LISTEN,
            "HOST:PORT of the web viewer, its JSON API and /metrics. Empty: no viewer.",
        )
        loader.add_option(
            "corral_viewer_token", str, "",
            "Token the API needs (Authorization: Bearer <token> or ?token=); required off loopback.",
        )

    def configure(self, updated: set[str]) -> None:
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
        from tornado.httpserver import HTTPServer

        from addon.viewer_api import make_app

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

    def token(self) -> str:
        return ctx.options.corral_viewer_token
