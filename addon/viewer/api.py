"""The viewer's HTTP surface (tornado): static files from ``web/``, the read-only JSON API, /metrics.

| path | answer |
|---|---|
| GET /api/flows | one page, newest first: ?provider ?model ?status=2xx|4xx|5xx|none ?cache ?q ?since ?limit ?before=<cursor> ?after=<cursor> |
| GET /api/flows/<id> | one flow with headers (credentials fingerprinted), bodies (the request as the client sent it), reassembled text, attempts, corral_changes (list: what Corral changed in what it forwarded) |
| GET /api/flows/<id>/curl | the request as a curl command line through the gateway, credentials as $VARIABLES |
| GET /api/facets | distinct providers, models, cache outcomes (filter drop-downs) |
| GET /api/analytics | totals, time series, by provider, by model: ?since=24h ?until ?provider ?model |
| /api/keys, /api/budgets, /api/spend | gateway keys, their admin API (create, revoke, rotate), budgets and spend: addon/viewer/admin_api.py |
| GET /metrics | Prometheus text format |

Every query runs on a worker thread; the event loop only formats JSON.
"""  # noqa: E501 - a markdown table keeps one row per line

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import tornado.web
from mitmproxy import ctx

from addon.storage import queries
from addon.storage.models import database_proxy
from addon.viewer import metrics
from addon.viewer.auth import token_ok
from addon.viewer.curl import curl_command, gateway_address
from addon.viewer.security import Guarded


def _in_thread(fn, *args: Any) -> Any:
    database_proxy.connect(reuse_if_open=True)  # peewee: one connection per worker thread, kept open
    return fn(*args)


async def run_query(fn, *args: Any) -> Any:
    return await asyncio.to_thread(_in_thread, fn, *args)


class Base(Guarded, tornado.web.RequestHandler):
    def initialize(self, viewer) -> None:
        self.viewer = viewer

    def prepare(self) -> None:
        self.set_header("Cache-Control", "no-store")
        if self.host_refused():
            return
        if not token_ok(
            self.viewer.token(), self.request.headers.get("Authorization"), self.get_query_argument("token", None)
        ):
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Bearer realm="corral"')
            self.finish({"error": "token required: Authorization: Bearer <token> or ?token="})

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(data, default=str))

    def filters(self) -> queries.Filters:
        arg = lambda name: self.get_query_argument(name, None) or None  # noqa: E731
        return queries.Filters(
            provider=arg("provider"), model=arg("model"), status=arg("status"), cache=arg("cache"), q=arg("q"),
            since=queries.parse_since(arg("since")), until=queries.parse_since(arg("until")),
        )

    def write_error(self, status_code: int, **kwargs: Any) -> None:  # JSON, never a traceback
        exc = kwargs.get("exc_info", (None, None))[1]
        message = str(exc) if isinstance(exc, queries.QueryError) else self._reason
        self.finish({"error": message})

    def log_exception(self, typ, value, tb) -> None:
        if not isinstance(value, queries.QueryError):
            super().log_exception(typ, value, tb)

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, queries.QueryError):
            self.send({"error": str(e)}, 400)
            return
        super()._handle_request_exception(e)


class FlowsHandler(Base):
    async def get(self) -> None:
        filters = self.filters()
        try:
            limit = int(self.get_query_argument("limit", "50") or 50)
        except ValueError:
            raise queries.QueryError("limit must be a number") from None
        page = await run_query(queries.list_flows, filters, limit,
                               self.get_query_argument("before", None), self.get_query_argument("after", None))
        self.send(page)


class FlowHandler(Base):
    async def get(self, flow_id: str, what: str | None = None) -> None:
        # No field longer than what the recorder keeps of a body (a row written before that limit, or
        # with a larger one, may hold more).
        flow = await run_query(queries.get_flow, flow_id, getattr(ctx.options, "corral_storage_body_limit", None))
        if flow is None:
            self.send({"error": "no such flow"}, 404)
        elif what == "curl":
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(curl_command(flow, gateway_address(self.request.host_name)) + "\n")
        else:
            flow["curl"] = curl_command(flow, gateway_address(self.request.host_name))
            self.send(flow)


class FacetsHandler(Base):
    async def get(self) -> None:
        self.send(await run_query(queries.facets))


class AnalyticsHandler(Base):
    async def get(self) -> None:
        filters = self.filters()
        if filters.since is None:
            filters.since = queries.parse_since("24h")
        self.send(await run_query(queries.analytics, filters))


class MetricsHandler(Base):
    def get(self) -> None:
        if self.viewer.registry is None:
            self.send({"error": "the Metrics addon is not loaded"}, 404)
            return
        body, content_type = metrics.exposition(self.viewer.registry)
        self.set_header("Content-Type", content_type)
        self.finish(body)


class StaticHandler(Guarded, tornado.web.StaticFileHandler):
    def initialize(self, viewer, path: str, default_filename: str | None = None) -> None:  # type: ignore[override]
        self.viewer = viewer
        super().initialize(path, default_filename)

    def prepare(self) -> None:
        self.host_refused()

    def parse_url_path(self, url_path: str) -> str:
        # A NUL reaches os.lstat as a ValueError (a 500) otherwise; no file has one in its name.
        if "\x00" in url_path:
            raise tornado.web.HTTPError(404)
        return super().parse_url_path(url_path)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")


def make_app(viewer, web_dir: Path) -> tornado.web.Application:
    from addon.viewer import admin_api  # it builds on Base above

    args = {"viewer": viewer}
    return tornado.web.Application([
        (r"/api/flows", FlowsHandler, args),
        (r"/api/flows/([A-Za-z0-9_.:-]+)", FlowHandler, args),
        (r"/api/flows/([A-Za-z0-9_.:-]+)/(curl)", FlowHandler, args),
        (r"/api/facets", FacetsHandler, args),
        (r"/api/analytics", AnalyticsHandler, args),
        *((path, handler, args) for path, handler in admin_api.ROUTES),
        (r"/metrics", MetricsHandler, args),
        (r"/(.*)", StaticHandler, {"viewer": viewer, "path": str(web_dir), "default_filename": "index.html"}),
    ], compress_response=True)
