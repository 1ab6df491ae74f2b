"""The ``flow.metadata`` keys through which Corral's addons talk to each other: the one place they are
documented. An addon reads only keys written by addons *before* it in the chain (see addon/chain.py).

Values are plain JSON-like data (str, int, float, bool, None, dict, list) because mitmproxy serialises
``flow.metadata`` with saved flows; per-flow working state (stream buffers, parsers) lives in the
addons themselves, keyed by ``flow.id``.

| key | type | written by | meaning |
|---|---|---|---|
| corral.mode | "reverse" / "explicit" / "capture" | router | how the client reached Corral (capture: redirected by `corral run --capture`, mitmproxy's local mode) |
| corral.provider | str | router (retrier: a model group's answering target) | catalog name of the target provider |
| corral.format | str | router | wire-format family handling this flow (providers/formats) |
| corral.upstream | str | router (retrier on fallback) | base URL the request was sent to |
| corral.credential | str / None | router | fingerprint of the client's credential, never the credential |
| corral.client_headers | list[[str, str]] | router | request headers as the client sent them (before any rewrite), credentials fingerprinted |
| corral.gateway_path | str | router | path and query that reach the same provider and upstream path through Corral's reverse mode (`/<prefix><rest>`, secrets in the query fingerprinted); absent when reverse mode cannot (SigV4, explicit per-host upstreams) |
| corral.route_error | str | router | why the request could not be routed; router answers it itself |
| corral.model | str / None | router (request), meter (response) | model: response's echo, else request's, else URL's |
| corral.stream_requested | bool | router | the request asked for a stream |
| corral.include_usage_requested | bool | router | OpenAI-compatible: the client set stream_options.include_usage |
| corral.include_usage_endpoint | bool | router | the endpoint's request schema has stream_options.include_usage (catalog `include_usage_paths`): the only place the meter may add it |
| corral.request_parse_error | str | router | request body is not what the family expects (passed on unchanged) |
| corral.request_params | dict[str, float] | router | sampling settings the request body states: max_tokens (max_completion_tokens, max_output_tokens), temperature, top_p; absent when none |
| corral.stream | bool | meter | the response was streamed (any framing) |
| corral.include_usage_injected | bool | meter | Corral asked upstream for stream usage the client did not ask for |
| corral.request_edit | dict | meter | the one edit made to the client's request bytes: {at, removed, added} (str); the recorder undoes it to store what the client sent |
| corral.changes | list[str] | meter, router and unified (the unified endpoint's rewrites) | every change Corral made to what it forwarded (request bytes, response body, framing), for the record |
| corral.response_type | str / None | meter | media type of the response (Content-Type without parameters) |
| corral.response_bytes | int | meter | body bytes the client received (as on the wire, still content-encoded) |
| corral.first_byte_at | float | meter | epoch time the first response body byte went to the client |
| corral.usage | dict | meter (cache on hit) | Usage.as_dict(): None for every counter not reported |
| corral.complete | bool | meter | the body/stream reached its own end marker |
| corral.response_error | str | meter | provider error (error status body, or error inside a 200 stream) |
| corral.parse_error | str | meter | response body could not be parsed, or decoded past `[gateway] parse_limit` ("response too large to decode"); passed on unchanged |
| corral.finish_reason | str | meter | why the model stopped (stop, length, end_turn, ...), when the response says |
| corral.response_id | str | meter | the provider's id of the response (chatcmpl-..., msg_...), OpenAI-compatible and Anthropic |
| corral.text | str | meter | reassembled output text, for the viewer: at most `[storage] body_limit` characters, then a clip marker |
| corral.cache | "hit"/"miss"/"refresh"/"skip"/"off" | cache | cache outcome; absent means off. On "hit" the cache publishes model/usage/stream/complete itself; the meter, limits and retries leave the flow alone (with replay_pace=original it goes to the in-process replay server on 127.0.0.1, not upstream) |
| corral.saved_cost_usd | float | cache | cost of the original response a hit replayed |
| corral.cache_key | str | cache | SHA-256 cache key of the request (addon/cache/key.py); set when the cache applies |
| corral.cache_ttl | float | cache | seconds a stored answer of this request lives |
| corral.retries | int | retrier | extra upstream attempts made (attempts - 1), fallbacks included |
| corral.attempts | list[dict] | retrier | per attempt: {upstream, status (None if no response), error, wait_ms (wait before the next attempt)}, and for a model group's flow target ("<provider>/<model>" the attempt went to) |
| corral.attempt_times | list[[int, int]] | retrier | per attempt, in the order of corral.attempts: [start, end] in epoch nanoseconds; start when the attempt began connecting, end when its answer's head arrived (its error body read) or it failed. For the telemetry's attempt spans |
| corral.cache_lookup_at | [int, int] | cache | [start, end] of the cache lookup (key and store read) in epoch nanoseconds; set when the store was asked (hit or miss) |
| corral.wait_at | [int, int] | rate limiter | [start, end] in epoch nanoseconds of the time the flow was held (end - start = corral.wait_ms); set with corral.wait_ms |
| corral.wait_ms | float | rate limiter | time the flow was held by a queueing limit (the client gets `x-corral-ratelimit-wait-ms`, addon/limits/accounting.py) |
| corral.gateway_error | str | any | error Corral itself answered with (429 limit, 502 upstream down, 504 ttfb timeout) or, on a stream the retrier cut for idleness, why |
| corral.recorded | bool | recorder | the flow's row was queued for the database |
| corral.cost_usd | float / None | recorder | cost of the exchange as recorded (0 on a cache hit; None if unpriced) |
| corral.metrics_counted | bool | metrics | the flow was counted in /metrics (once, at response or error) |
| corral.internal | str | router | path of a request to Corral's own `/_corral/...` endpoints (not an LLM flow, never recorded); InternalHosts 403s a foreign Host, the owning addon answers it in `requestheaders`, the router 404s the rest |
| corral.fixture | "replayed"/"record"/"miss" | fixture player | record/replay fixtures ([fixtures] mode): answered from the set (meter parses it; limits and retries leave it alone; with pace=original it goes to the in-process replay server), to be recorded by the fixture taker, or a replay miss answered with miss_status |
| corral.tenant | str | rate limiter | client-supplied tenant (`x-corral-tenant`, when `[limits_settings] tenant_header = true`) |
| corral.ratelimit | list[str] | rate limiter | names of the limits that counted this flow |
| corral.unified | dict | router | the request came through the unified OpenAI-compatible endpoint (`POST /v1/chat/completions`, `POST /v1/embeddings`, addon/unified/): {endpoint ("chat.completions" / "embeddings"), requested_model ("<provider>/<model>" as the client sent it), native_model, translate (the family the request is translated to, None when the provider is OpenAI-compatible and gets it as is)}; a translated embeddings request also encoding_format ("float" / "base64": how the client gets the vectors, set by unified request); for a model group (`[models.<alias>]`, addon/unified/groups.py) also alias, targets (the order this request tries them in) and answered_by (the target whose answer the client got; the retrier updates it, with native_model, translate, provider, format and the request, when a later target answers) |
| corral.unified_stream | dict | unified request, router (model groups) | a translated request (or a model group's): {stream (the client asked for a stream), include_usage (the client asked for the usage chunk)}; the unified response addon answers in that shape |
| corral.gateway_key | str | key check | id of the valid gateway key (`ck-<id>`) the request presented; never the key itself. Key spend adds the flow's cost to it |
| corral.budget_refused | str | key check | id of the budget (`key:<id>`, `team:<name>`, `tag:<k>=<v>`) that had no room for the request (its 429); budget alerts count the budget as used up (the 100 % threshold) |
| corral.state_degraded | list[str] | rate limiter, accounting, cache | shared state (`[state] url`, Redis) was unavailable for this flow: notes like "limits: ..." / "cache: ..."; the client gets `x-corral-state: degraded` (addon/state.py) |
"""  # noqa: E501 - a markdown table keeps one row per line

from __future__ import annotations

MODE = "corral.mode"
PROVIDER = "corral.provider"
FORMAT = "corral.format"
UPSTREAM = "corral.upstream"
CREDENTIAL = "corral.credential"
CLIENT_HEADERS = "corral.client_headers"
GATEWAY_PATH = "corral.gateway_path"
ROUTE_ERROR = "corral.route_error"
MODEL = "corral.model"
STREAM = "corral.stream"
STREAM_REQUESTED = "corral.stream_requested"
INCLUDE_USAGE_REQUESTED = "corral.include_usage_requested"
REQUEST_PARSE_ERROR = "corral.request_parse_error"
REQUEST_PARAMS = "corral.request_params"
FINISH_REASON = "corral.finish_reason"
RESPONSE_ID = "corral.response_id"
INCLUDE_USAGE_INJECTED = "corral.include_usage_injected"
INCLUDE_USAGE_ENDPOINT = "corral.include_usage_endpoint"
REQUEST_EDIT = "corral.request_edit"
CHANGES = "corral.changes"
RESPONSE_TYPE = "corral.response_type"
RESPONSE_BYTES = "corral.response_bytes"
FIRST_BYTE_AT = "corral.first_byte_at"
USAGE = "corral.usage"
COMPLETE = "corral.complete"
RESPONSE_ERROR = "corral.response_error"
PARSE_ERROR = "corral.parse_error"
TEXT = "corral.text"
CACHE = "corral.cache"
SAVED_COST_USD = "corral.saved_cost_usd"
CACHE_KEY = "corral.cache_key"
CACHE_TTL = "corral.cache_ttl"
RETRIES = "corral.retries"
ATTEMPTS = "corral.attempts"
ATTEMPT_TIMES = "corral.attempt_times"
CACHE_LOOKUP_AT = "corral.cache_lookup_at"
WAIT_AT = "corral.wait_at"
WAIT_MS = "corral.wait_ms"
GATEWAY_ERROR = "corral.gateway_error"
RECORDED = "corral.recorded"
COST_USD = "corral.cost_usd"
METRICS_COUNTED = "corral.metrics_counted"
INTERNAL = "corral.internal"
TENANT = "corral.tenant"
FIXTURE = "corral.fixture"
RATELIMIT = "corral.ratelimit"
STATE_DEGRADED = "corral.state_degraded"
UNIFIED = "corral.unified"
UNIFIED_STREAM = "corral.unified_stream"
GATEWAY_KEY = "corral.gateway_key"
BUDGET_REFUSED = "corral.budget_refused"

INTERNAL_PREFIX = "_corral"  # http://<gateway>/_corral/... : Corral's own endpoints


def is_llm_flow(flow) -> bool:
    """True for flows Corral handles: routed to a provider, or refused by the router."""
    return PROVIDER in flow.metadata or ROUTE_ERROR in flow.metadata or UNIFIED in flow.metadata


def unified_translated(flow) -> str | None:
    """The family a unified request is translated to, or None (not unified, or passed through)."""
    unified = flow.metadata.get(UNIFIED)
    return unified.get("translate") if unified else None


def client_went_away(flow) -> bool:
    """The flow ended because the client hung up (mitmproxy's "Client disconnected.", "Client closed
    connection before completing request headers", ...), not because the upstream failed."""
    return flow.error is not None and "client" in flow.error.msg.lower()
