"""Responses Corral makes itself (404 unknown route, 429 limit, 502 upstream down, ...).

They use the target provider's own error JSON shape, so the client's SDK raises its usual error type,
and carry ``x-corral-*`` headers saying what happened.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from addon import metadata as md
from providers.formats import get_family

logger = logging.getLogger(__name__)

DEFAULT_FAMILY = "openai"


def make_error(
    flow: http.HTTPFlow,
    status: int,
    message: str,
    kind: str,
    headers: dict[str, str] | None = None,
) -> http.Response:
    """An error response in the flow's provider format; records why in the flow's metadata."""
    family_name = flow.metadata.get(md.FORMAT) or DEFAULT_FAMILY
    try:
        body, content_type = get_family(family_name).error_body(status, message, kind)
    except Exception:  # a handler bug must not turn a clean error into a traceback
        logger.exception("corral: error_body failed for %s", family_name)
        body, content_type = get_family(DEFAULT_FAMILY).error_body(status, message, kind)
    all_headers = {"content-type": content_type, "x-corral-error": kind}
    all_headers.update(headers or {})
    flow.metadata[md.GATEWAY_ERROR] = message
    return http.Response.make(status, body, all_headers)
