"""Annotator: a one-line summary of each LLM flow in mitmweb, where flow.metadata is not shown.

``flow.comment`` reads ``openai gpt-4o-mini · 25→32 tok · $0.000024 · cache miss``; ``flow.marked`` flags
errors (⚠) and cache hits (♻). Runs after the Recorder, which publishes the cost it computed
(``corral.cost_usd``), so the comment and the database row always agree.

mitmweb hides the comment column by default and its flow list otherwise shows only the upstream URL, so
when Corral runs inside mitmweb and the user has not chosen columns, the comment column is switched on
next to the path. The marks are shortcodes whose characters have a text presentation (U+26A0, U+267B) and
exist in ordinary fonts; the coloured-circle emoji rendered as empty boxes without an emoji font.
"""

from __future__ import annotations

from mitmproxy import ctx, http

from addon import metadata as md, money
from addon.recorder import _error_text

MARK_ERROR = ":warning:"
MARK_CACHE_HIT = ":recycle:"
ERROR_CHARS = 80
WEB_COLUMNS_OPTION = "web_columns"


def annotation(flow: http.HTTPFlow) -> tuple[str, str]:
    """(comment, mark) for an LLM flow; mark is "" when nothing stands out."""
    meta = flow.metadata
    parts = [" ".join(str(p) for p in (meta.get(md.PROVIDER), meta.get(md.MODEL)) if p) or "corral"]
    usage = meta.get(md.USAGE) or {}
    tokens_in, tokens_out = usage.get("input_tokens"), usage.get("output_tokens")
    if tokens_in is not None or tokens_out is not None:
        parts.append(f"{'?' if tokens_in is None else tokens_in}→{'?' if tokens_out is None else tokens_out} tok")
    if meta.get(md.STREAM):
        parts.append("stream")
    cost = meta.get(md.COST_USD)
    if cost is not None or tokens_in is not None or tokens_out is not None:  # tokens without a price: unpriced
        parts.append(money.cost(cost, cost is None))
    cache = meta.get(md.CACHE)
    if cache and cache != "off":
        parts.append(f"cache {cache}")
    status = flow.response.status_code if flow.response is not None else None
    error = _error_text(flow)
    if status is not None and status >= 400:
        parts.append(f"HTTP {status}")
    if error:
        parts.append("error: " + (error if len(error) <= ERROR_CHARS else error[:ERROR_CHARS - 1] + "…"))
    mark = MARK_ERROR if error or status is None or status >= 400 else MARK_CACHE_HIT if cache == "hit" else ""
    return " · ".join(parts), mark


def with_comment_column(columns: list[str]) -> list[str]:
    """mitmweb's columns with "comment" right after "path" (or last when there is no path column)."""
    if "comment" in columns:
        return list(columns)
    at = columns.index("path") + 1 if "path" in columns else len(columns)
    return [*columns[:at], "comment", *columns[at:]]


class Annotator:
    def running(self) -> None:
        # The option exists only under mitmweb; a user's own choice of columns is left alone.
        if WEB_COLUMNS_OPTION in ctx.options and not ctx.options.has_changed(WEB_COLUMNS_OPTION):
            columns = list(getattr(ctx.options, WEB_COLUMNS_OPTION))
            ctx.options.update(**{WEB_COLUMNS_OPTION: with_comment_column(columns)})

    def response(self, flow: http.HTTPFlow) -> None:
        self.annotate(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.annotate(flow)

    def annotate(self, flow: http.HTTPFlow) -> None:
        if not md.is_llm_flow(flow):
            return
        flow.comment, mark = annotation(flow)
        if mark:
            flow.marked = mark
        # No UpdateHook of our own: mitmproxy triggers `update` for the flow right after every
        # lifecycle hook (AddonManager.handle_lifecycle), so mitmweb pushes the comment then.
