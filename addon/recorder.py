"""Recorder: one database row per flow Corral handled, whatever happened to it.

Rows are built on the event loop from the flow and its metadata (cheap), priced, and handed to the
RecordWriter thread (addon/storage/writer.py), which writes them in batches. Flows still in flight at
shutdown are recorded as aborted, then the writer drains: SIGTERM loses nothing.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import time
from typing import Any

from mitmproxy import ctx, exceptions, http

from addon import metadata as md, paths
from addon.credentials import redact_headers, redact_url_path
from addon.decoding import decode_bounded
from addon.services import PricingService
from addon.storage.db import DatabaseError
from addon.storage.writer import RecordWriter
from providers.formats.common import clip_text

logger = logging.getLogger(__name__)

BODY_MODES = ("full", "metadata")
SHUTDOWN_ERROR = "gateway shut down before the exchange finished"


def _body_text(raw: bytes | None, limit: int) -> str | None:
    if not raw:
        return None
    clipped = raw[:limit]
    try:
        text = clipped.decode("utf-8")
    except UnicodeDecodeError as e:
        if len(raw) > limit and e.reason == "unexpected end of data":
            # The clip cut the last character in two: the text before it is still text, not binary.
            return clipped[: e.start].decode("utf-8")
        return "base64:" + base64.b64encode(clipped).decode("ascii")
    return text


def _short(value: object) -> str | None:
    """A client-chosen name for a 255-character column."""
    return None if value is None else str(value)[:255]


def client_request_body(flow: http.HTTPFlow) -> bytes | None:
    """The request body as the client sent it: Corral's one edit (the include-usage option) undone."""
    raw = flow.request.raw_content
    edit = flow.metadata.get(md.REQUEST_EDIT)
    if raw is None or not edit:
        return raw
    at, removed, added = edit["at"], edit["removed"].encode(), edit["added"].encode()
    return raw[:at] + removed + raw[at + len(added):]


def _response_body(resp: http.Response | None, limit: int) -> str | None:
    """The stored copy of the response body: decoded (gzip, br, ...) up to ``limit`` bytes only, so a
    compression bomb never inflates here; bytes that do not decode are kept as they are."""
    if resp is None or not resp.raw_content:
        return None
    decoded = decode_bounded(resp.raw_content, resp.headers.get("content-encoding", ""), limit + 1)
    if decoded.error:
        return _body_text(resp.raw_content, limit)
    return _body_text(decoded.data, limit)


def _headers_json(headers: http.Headers | None) -> str | None:
    if headers is None:
        return None
    return json.dumps(redact_headers(headers.items(multi=True)))


def _error_text(flow: http.HTTPFlow) -> str | None:
    meta = flow.metadata
    if meta.get(md.GATEWAY_ERROR):
        return meta[md.GATEWAY_ERROR]
    if meta.get(md.ROUTE_ERROR):
        return meta[md.ROUTE_ERROR]
    if flow.error is not None:
        msg = flow.error.msg
        if meta.get(md.COMPLETE) and md.client_went_away(flow):
            # The openai SDK hangs up as soon as it reads `data: [DONE]`: the stream was complete.
            return meta.get(md.RESPONSE_ERROR)
        if flow.response is not None and meta.get(md.STREAM):
            if md.client_went_away(flow) and meta.get(md.RESPONSE_ERROR):
                # The provider's error event came first; the client (an SDK raising it) hung up after it.
                return f"{meta[md.RESPONSE_ERROR]} (then the client closed the stream)"
            who = "client aborted the stream" if md.client_went_away(flow) else "stream broke off"
            return f"{who}: {msg}"
        return msg
    return meta.get(md.RESPONSE_ERROR)


def _status(flow: http.HTTPFlow) -> int | None:
    """The HTTP status the client got. An upstream failure before any response makes mitmproxy answer
    502 itself; a client that left before any response got nothing (NULL)."""
    if flow.response is not None:
        return flow.response.status_code
    if flow.error is not None and not md.client_went_away(flow):
        return 502
    return None


class Recorder:
    def __init__(self, pricing: PricingService) -> None:
        self.pricing = pricing
        self.writer: RecordWriter | None = None
        self.inflight: dict[str, http.HTTPFlow] = {}
        self.stopping = False  # set by the SIGTERM handler (addon/gateway.py) before it ends the connections
        # Set by `corral start --workers N` for each gateway process (addon/workers.py).
        worker = os.environ.get("CORRAL_WORKER", "")
        self.worker = int(worker) if worker.isdigit() else None

    def load(self, loader) -> None:
        loader.add_option(
            "corral_storage_db", str, "",
            f"Database URL (peewee): sqlite:///path.db or postgresql://user@host/db. "
            f"Empty: {paths.default_db_url()}",
        )
        loader.add_option(
            "corral_storage_bodies", str, "full",
            "What is kept of bodies: full (headers and bodies) or metadata (no bodies).",
        )

    def configure(self, updated: set[str]) -> None:
        if "corral_storage_bodies" in updated and ctx.options.corral_storage_bodies not in BODY_MODES:
            raise exceptions.OptionsError(f"[storage] bodies: expected one of {', '.join(BODY_MODES)}, "
                                          f"got {ctx.options.corral_storage_bodies!r}")
        if "corral_storage_db" in updated:
            url = ctx.options.corral_storage_db or paths.default_db_url()
            writer = RecordWriter(url)
            try:
                writer.start()
            except DatabaseError as e:
                raise exceptions.OptionsError(str(e)) from None
            old, self.writer = self.writer, writer
            if old is not None:
                old.close()
            logger.info("corral: recording to %s", url)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if md.is_llm_flow(flow):
            self.inflight[flow.id] = flow

    def response(self, flow: http.HTTPFlow) -> None:
        self.record(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.record(flow)

    def done(self) -> None:
        for flow in list(self.inflight.values()):
            if flow.error is None:
                flow.metadata.setdefault(md.GATEWAY_ERROR, SHUTDOWN_ERROR)
            self.record(flow)
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def record(self, flow: http.HTTPFlow) -> None:
        self.inflight.pop(flow.id, None)
        if not md.is_llm_flow(flow) or flow.metadata.get(md.RECORDED) or self.writer is None:
            return
        flow.metadata[md.RECORDED] = True
        if self.stopping and flow.error is not None and not flow.metadata.get(md.COMPLETE):
            # The shutdown ended its connection; mitmproxy reports that as "Client disconnected."
            flow.metadata.setdefault(md.GATEWAY_ERROR, SHUTDOWN_ERROR)
        try:
            row = self.build_row(flow)
        except Exception:  # a bug here must never cost the client its answer, nor lose the row
            logger.exception("corral: could not build the record of %s", flow.id)
            row = {"id": flow.id, "started_at": datetime.datetime.now(datetime.UTC).replace(tzinfo=None),
                   "mode": flow.metadata.get(md.MODE, "reverse"), "method": flow.request.method,
                   "path": redact_url_path(flow.request.path), "error": "corral: record incomplete (internal error)"}
        flow.metadata[md.COST_USD] = row.get("cost_usd")  # for the annotator and Metrics, later in the chain
        self.writer.submit(row)

    def build_row(self, flow: http.HTTPFlow) -> dict[str, Any]:
        meta = flow.metadata
        req, resp = flow.request, flow.response
        usage = meta.get(md.USAGE) or {}
        started = req.timestamp_start
        end = (resp.timestamp_end if resp is not None and resp.timestamp_end else None) or time.time()
        ttfb_at = meta.get(md.FIRST_BYTE_AT) or (resp.timestamp_start if resp is not None else None)
        price = self.pricing.price(meta)
        cache = meta.get(md.CACHE, "off")
        cost = price.cost_usd
        saved = None
        if cache == "hit":  # a hit cost nothing; what it would have cost is the saving
            saved, cost = meta.get(md.SAVED_COST_USD, cost), 0.0
        elif meta.get(md.FIXTURE) == "replayed":  # answered from a fixture set: nothing was spent
            saved, cost = cost, 0.0
        full = ctx.options.corral_storage_bodies == "full"
        limit = ctx.options.corral_storage_body_limit
        return {
            "id": flow.id,
            "started_at": datetime.datetime.fromtimestamp(started, datetime.UTC).replace(tzinfo=None),
            "mode": meta.get(md.MODE, "reverse"),
            "provider": meta.get(md.PROVIDER),
            "method": req.method,
            "host": req.host,
            "path": redact_url_path(req.path),
            "gateway_path": meta.get(md.GATEWAY_PATH),
            "model": meta.get(md.MODEL),
            "status": _status(flow),
            "stream": bool(meta.get(md.STREAM)),
            "ttfb_ms": round((ttfb_at - started) * 1000, 2) if ttfb_at else None,
            "duration_ms": round((end - started) * 1000, 2),
            "input_tokens": usage.get("input_tokens"),
            "output_tokens": usage.get("output_tokens"),
            "cached_input_tokens": usage.get("cached_input_tokens"),
            "cache_creation_input_tokens": usage.get("cache_creation_input_tokens"),
            "reasoning_tokens": usage.get("reasoning_tokens"),
            "total_tokens": usage.get("total_tokens"),
            "cost_usd": cost,
            # Unpriced means tokens were counted but no price is known; no usage is not "unpriced".
            "unpriced": price.unpriced and (usage.get("input_tokens") is not None
                                            or usage.get("output_tokens") is not None),
            "saved_cost_usd": saved,
            "cache": cache,
            "retries": meta.get(md.RETRIES, 0),
            "wait_ms": meta.get(md.WAIT_MS),
            "upstream": meta.get(md.UPSTREAM),
            "complete": bool(meta.get(md.COMPLETE)),
            "error": _error_text(flow),
            "parse_error": meta.get(md.PARSE_ERROR) or meta.get(md.REQUEST_PARSE_ERROR),
            "credential": meta.get(md.CREDENTIAL),
            "gateway_key": meta.get(md.GATEWAY_KEY),
            "client": flow.client_conn.peername[0] if flow.client_conn.peername else None,
            # What the client sent: later addons rewrite Host and strip Corral's own x-corral-* headers.
            "request_headers": (json.dumps(meta[md.CLIENT_HEADERS]) if md.CLIENT_HEADERS in meta
                                else _headers_json(req.headers)),
            "response_headers": _headers_json(resp.headers if resp is not None else None),
            "request_body": _body_text(client_request_body(flow), limit) if full else None,
            "response_body": _response_body(resp, limit) if full else None,
            "response_text": clip_text(meta.get(md.TEXT), limit) if full else None,
            "attempts": json.dumps(meta[md.ATTEMPTS]) if meta.get(md.ATTEMPTS) else None,
            "worker": self.worker,
            "corral_changes": json.dumps(meta[md.CHANGES]) if meta.get(md.CHANGES) else None,
            "response_type": meta.get(md.RESPONSE_TYPE),
            "response_bytes": meta.get(md.RESPONSE_BYTES),
            "requested_model": _short((meta.get(md.UNIFIED) or {}).get("requested_model")),
            "model_alias": _short((meta.get(md.UNIFIED) or {}).get("alias")),
        }
