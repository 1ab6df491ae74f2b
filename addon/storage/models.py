"""The tables. Plain columns with readable names, so the SQLite file opens as-is in Datasette,
sqlite-utils or any SQL client. Times are UTC.
"""

from __future__ import annotations

import peewee

database_proxy = peewee.DatabaseProxy()


class BaseModel(peewee.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class Flow(BaseModel):
    """One row per flow Corral handled: every exchange, also errors, aborts and refusals."""

    id = peewee.CharField(primary_key=True, max_length=64)
    started_at = peewee.DateTimeField(index=True)
    mode = peewee.CharField(max_length=16)  # reverse | explicit
    provider = peewee.CharField(max_length=64, null=True)
    method = peewee.CharField(max_length=16)
    host = peewee.CharField(max_length=255, null=True)  # upstream host
    path = peewee.TextField()  # path + query sent upstream (secret query values fingerprinted)
    model = peewee.CharField(max_length=255, null=True)
    status = peewee.IntegerField(null=True)  # HTTP status the client got; NULL if none was sent
    stream = peewee.BooleanField(default=False)
    ttfb_ms = peewee.FloatField(null=True)
    duration_ms = peewee.FloatField(null=True)
    input_tokens = peewee.IntegerField(null=True)
    output_tokens = peewee.IntegerField(null=True)
    cached_input_tokens = peewee.IntegerField(null=True)
    cache_creation_input_tokens = peewee.IntegerField(null=True)
    reasoning_tokens = peewee.IntegerField(null=True)
    total_tokens = peewee.IntegerField(null=True)
    cost_usd = peewee.FloatField(null=True)
    unpriced = peewee.BooleanField(default=False)  # usage known but no price: cost stays NULL, never 0
    saved_cost_usd = peewee.FloatField(null=True)  # cache hits: what the replayed answer cost originally
    cache = peewee.CharField(max_length=16, default="off")
    retries = peewee.IntegerField(default=0)
    wait_ms = peewee.FloatField(null=True)  # time held by a queueing rate limit
    upstream = peewee.TextField(null=True)  # base URL that answered
    complete = peewee.BooleanField(default=False)
    error = peewee.TextField(null=True)  # provider error, abort/truncation, gateway error
    parse_error = peewee.TextField(null=True)  # request/response body not understood (passed on unchanged)
    credential = peewee.CharField(max_length=32, null=True)  # fingerprint, never the secret
    client = peewee.CharField(max_length=64, null=True)
    request_headers = peewee.TextField(null=True)  # JSON list of [name, value]
    response_headers = peewee.TextField(null=True)
    request_body = peewee.TextField(null=True)  # as the client sent it; text, binary bodies as "base64:..."
    response_body = peewee.TextField(null=True)
    response_text = peewee.TextField(null=True)  # reassembled output text of streams and JSON answers
    attempts = peewee.TextField(null=True)  # JSON list: per upstream attempt status/error/wait
    worker = peewee.IntegerField(null=True)  # `corral start --workers N`: 1..N of the process; NULL if one
    corral_changes = peewee.TextField(null=True)  # JSON list: what Corral changed in what it forwarded; NULL: nothing
    response_type = peewee.CharField(max_length=255, null=True)  # media type of the response body
    response_bytes = peewee.IntegerField(null=True)  # body bytes the client received (still content-encoded)
    gateway_path = peewee.TextField(null=True)  # the same request through Corral's reverse mode (copy as curl)
    gateway_key = peewee.CharField(max_length=32, null=True)  # id of the gateway key presented ([keys]), never the key
    # The unified endpoint (/v1/...): the model the client named ("<provider>/<model>" or an alias), and the
    # alias when it named a model group ([models.<alias>]); NULL for native requests.
    requested_model = peewee.CharField(max_length=255, null=True)
    model_alias = peewee.CharField(max_length=255, null=True)

    class Meta:
        table_name = "flows"
        indexes = (
            (("started_at", "id"), False),  # keyset pagination of the viewer's list (newest first)
            (("provider", "started_at"), False),
            (("model", "started_at"), False),
            (("status", "started_at"), False),
            (("cache", "started_at"), False),
        )


class CacheEntry(BaseModel):
    """One stored answer of the response cache (addon/cache/backend.py). ``key`` is a SHA-256 over
    provider, method, path, canonical body and credential (or shared namespace): never a secret."""

    key = peewee.CharField(primary_key=True, max_length=64)
    provider = peewee.CharField(max_length=64, index=True)
    model = peewee.CharField(max_length=255, null=True)
    created_at = peewee.FloatField()  # epoch seconds
    expires_at = peewee.FloatField(index=True)  # epoch seconds
    status = peewee.IntegerField()
    stream = peewee.BooleanField(default=False)
    headers = peewee.TextField()  # JSON list of [name, value] as the client got them (no secrets)
    body = peewee.BlobField()  # the whole body as sent to the client (still content-encoded)
    chunks = peewee.TextField(null=True)  # streams: JSON {"headers_at": s, "chunks": [[s, bytes], ...]}
    usage = peewee.TextField(null=True)  # JSON Usage.as_dict() of the original response
    cost_usd = peewee.FloatField(null=True)  # what the original response cost
    size = peewee.IntegerField(default=0)  # bytes of body
    hits = peewee.IntegerField(default=0)

    class Meta:
        table_name = "cache_entries"


class GatewayKey(BaseModel):
    """A key Corral issued (`corral keys create`): only a salted SHA-256 of the key and its display prefix
    are kept; the key itself is printed once. Scope and budget are checked by addon/keys."""

    id = peewee.CharField(primary_key=True, max_length=32)  # the 8 hex digits after "ck-"
    name = peewee.CharField(max_length=255)
    prefix = peewee.CharField(max_length=32)  # "ck-<id>": what lists and logs show
    salt = peewee.CharField(max_length=64)
    key_hash = peewee.CharField(max_length=64)  # sha256(salt + key), hex
    providers = peewee.TextField(null=True)  # JSON list of provider names; NULL: any
    models = peewee.TextField(null=True)  # JSON list of model globs; NULL: any
    budget_usd = peewee.FloatField(null=True)
    period = peewee.CharField(max_length=16, null=True)  # day | week | month | total ([keys] timezone calendar)
    team = peewee.CharField(max_length=255, null=True)  # [budgets.team.<name>] applies to it
    tags = peewee.TextField(null=True)  # JSON list of "k=v"; [budgets.tag."k=v"] applies to it
    created_at = peewee.DateTimeField()
    expires_at = peewee.DateTimeField(null=True)
    revoked_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "gateway_keys"


class KeyAudit(BaseModel):
    """One row per admin action on a gateway key (create, revoke, rotate): who, what, when."""

    at = peewee.DateTimeField(index=True)
    actor = peewee.CharField(max_length=255)  # `corral keys`: the OS user and host that ran it
    action = peewee.CharField(max_length=32)
    key_id = peewee.CharField(max_length=32, index=True)
    detail = peewee.TextField(null=True)  # JSON: the settings of a created key (never the key)

    class Meta:
        table_name = "key_audit"


class BudgetAlert(BaseModel):
    """One row per budget alert sent ([alerts] thresholds): a budget crossing a threshold fires once per
    period. The unique index is the claim, so neither a restart nor another gateway process sharing the
    database sends it again (addon/keys/alerts.py)."""

    budget = peewee.CharField(max_length=255)  # "key:<id>" (the 8 hex digits of ck-<id>), "team:<name>", "tag:<k>=<v>"
    threshold = peewee.FloatField()  # fraction of the limit: 0.5, 0.8, 1.0
    period_start = peewee.DateTimeField()  # start of the budget period it fired in (UTC)
    fired_at = peewee.DateTimeField(index=True)
    spent_usd = peewee.FloatField()
    limit_usd = peewee.FloatField()
    detail = peewee.TextField(null=True)  # JSON: the event as sent (key prefix and name, never the key)

    class Meta:
        table_name = "budget_alerts"
        indexes = ((("budget", "threshold", "period_start"), True),)


class BudgetSlot(BaseModel):
    """A budget's settled spend in one period, for ``[keys] ledger = "database"`` (addon/keys/dbledger.py):
    seeded once from the recorded flows, then kept by the settlements of every process on the database."""

    slot = peewee.CharField(primary_key=True, max_length=320)  # "<budget id>@<period start, UTC ISO>"
    spent_nano = peewee.BigIntegerField()  # integer nano-dollars: no float drift across processes

    class Meta:
        table_name = "budget_slots"


class BudgetHold(BaseModel):
    """One admitted, still running request's reservation on one budget slot (``[keys] ledger = "database"``)."""

    flow_id = peewee.CharField(max_length=64, index=True)
    slot = peewee.CharField(max_length=320, index=True)
    nano = peewee.BigIntegerField()
    at = peewee.BigIntegerField()  # unix seconds; a hold older than dbledger.HOLD_TTL no longer counts

    class Meta:
        table_name = "budget_holds"


ALL_MODELS: list[type[BaseModel]] = [Flow, CacheEntry, GatewayKey, KeyAudit, BudgetAlert, BudgetSlot, BudgetHold]

# Field names `corral flows --json` prints, in order.
FLOW_SUMMARY_FIELDS = [
    "id", "started_at", "mode", "provider", "method", "path", "model", "status", "stream",
    "ttfb_ms", "duration_ms", "input_tokens", "output_tokens", "cached_input_tokens",
    "cache_creation_input_tokens", "reasoning_tokens", "total_tokens", "cost_usd", "unpriced",
    "cache", "retries", "wait_ms", "upstream", "complete", "error", "parse_error", "credential",
    "response_type", "response_bytes", "corral_changes", "requested_model", "model_alias",
]
