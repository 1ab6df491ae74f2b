"""Read-side queries over the ``flows`` table, shared by the viewer's JSON API, `corral stats` and
`corral export`. Everything here is synchronous peewee: callers on the event loop run it with
``asyncio.to_thread`` (peewee keeps one connection per thread, so readers never share a cursor).

The flow list uses keyset pagination on (started_at, id), newest first, backed by the
``flows_started_at_id`` index: a deep page costs the same as the first one.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import peewee

from addon.storage.models import FLOW_SUMMARY_FIELDS, Flow
from providers.formats.common import clip_marker

LIST_FIELDS = [*FLOW_SUMMARY_FIELDS, "saved_cost_usd"]
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "none")
_SINCE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class QueryError(ValueError):
    """A bad filter or cursor from the user (the API answers it with 400)."""


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def parse_since(value: str | None, now: datetime.datetime | None = None) -> datetime.datetime | None:
    """'24h', '30m', '7d', '90s', '2w' -> naive UTC start time; an ISO time is taken as is."""
    if not value:
        return None
    m = _SINCE_RE.match(value)
    if m:
        try:
            return (now or utcnow()) - datetime.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
        except OverflowError:  # before year 1 (100000000d): no time to count from
            raise QueryError(f"--since {value!r} reaches before year 1") from None
    try:
        t = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise QueryError(f"--since must be like 24h, 30m, 7d or an ISO time, got {value!r}") from None
    return t.astimezone(datetime.UTC).replace(tzinfo=None) if t.tzinfo else t


def iso(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.replace(tzinfo=datetime.UTC).isoformat()
    return value


def row_dict(flow: Flow, fields: list[str] | None = None) -> dict[str, Any]:
    data = flow.__data__
    return {k: iso(data.get(k)) for k in (fields or [f.name for f in Flow._meta.sorted_fields])}


# --- the flow list ---------------------------------------------------------------------------


@dataclass
class Filters:
    provider: str | None = None
    model: str | None = None
    status: str | None = None  # 2xx / 4xx / 5xx / none
    cache: str | None = None
    q: str | None = None  # substring of request/response body or reassembled text
    since: datetime.datetime | None = None
    until: datetime.datetime | None = None

    def where(self, query: peewee.ModelSelect[Flow]) -> peewee.ModelSelect[Flow]:
        if self.provider:
            query = query.where(Flow.provider == self.provider)
        if self.model:
            query = query.where(Flow.model == self.model)
        if self.status:
            if self.status not in STATUS_CLASSES:
                raise QueryError(f"status must be one of {', '.join(STATUS_CLASSES)}")
            if self.status == "none":
                query = query.where(Flow.status.is_null())
            else:
                low = int(self.status[0]) * 100
                query = query.where((Flow.status >= low) & (Flow.status < low + 100))
        if self.cache:
            query = query.where(Flow.cache == self.cache)
        if self.q:
            query = query.where(
                Flow.request_body.contains(self.q) | Flow.response_body.contains(self.q)
                | Flow.response_text.contains(self.q) | Flow.path.contains(self.q)
            )
        if self.since:
            query = query.where(Flow.started_at >= self.since)
        if self.until:
            query = query.where(Flow.started_at < self.until)
        return query


def encode_cursor(row: dict[str, Any]) -> str:
    return f"{row['started_at']}|{row['id']}"


def decode_cursor(cursor: str) -> tuple[datetime.datetime, str]:
    stamp, sep, flow_id = cursor.partition("|")
    try:
        t = datetime.datetime.fromisoformat(stamp)
    except ValueError:
        raise QueryError("bad cursor") from None
    if not sep:
        raise QueryError("bad cursor")
    return (t.astimezone(datetime.UTC).replace(tzinfo=None) if t.tzinfo else t), flow_id


def list_flows(
    filters: Filters, limit: int = 50, before: str | None = None, after: str | None = None
) -> dict[str, Any]:
    """One page, newest first. ``before``: the page after that cursor (older rows); ``after``: only rows
    newer than that cursor (live updates), newest first."""
    limit = max(1, min(int(limit), 500))
    fields = [getattr(Flow, name) for name in LIST_FIELDS]
    query = filters.where(Flow.select(*fields))
    if before:
        t, fid = decode_cursor(before)
        # The outer range term lets the planner walk the (started_at, id) index from the cursor on.
        query = query.where((Flow.started_at <= t) & ((Flow.started_at < t) | (Flow.id < fid)))
    if after:
        t, fid = decode_cursor(after)
        query = query.where((Flow.started_at >= t) & ((Flow.started_at > t) | (Flow.id > fid)))
    query = query.order_by(Flow.started_at.desc(), Flow.id.desc()).limit(limit + 1)
    rows = [row_dict(r, LIST_FIELDS) for r in query]
    more = len(rows) > limit
    rows = rows[:limit]
    return {"flows": rows, "next": encode_cursor(rows[-1]) if more and rows else None}


def get_flow(flow_id: str, field_limit: int | None = None) -> dict[str, Any] | None:
    """One flow; with ``field_limit``, no text field longer than that (cut in SQL, then marked), so a
    huge stored body never reaches memory or the answer whole."""
    query = Flow.select()
    long_fields = [f for f in Flow._meta.sorted_fields if isinstance(f, peewee.TextField)]
    if field_limit is not None:
        long_names = {f.name for f in long_fields}  # by name: a peewee field's == builds an expression
        short = [f for f in Flow._meta.sorted_fields if f.name not in long_names]
        query = Flow.select(*short, *(peewee.fn.SUBSTR(f, 1, field_limit + 1).alias(f.name) for f in long_fields))
    flow = query.where(Flow.id == flow_id).first()
    if flow is None:
        return None
    data = row_dict(flow)
    if field_limit is not None:
        for f in long_fields:
            value = data.get(f.name)
            if isinstance(value, str) and len(value) > field_limit:
                data[f.name] = value[:field_limit] + clip_marker(field_limit)
    for key in ("request_headers", "response_headers", "attempts", "corral_changes"):
        if data.get(key):
            try:
                data[key] = json.loads(data[key])
            except ValueError:
                pass
    return data


def facets() -> dict[str, list[str]]:
    """Distinct providers, models and cache outcomes, for the filter drop-downs."""
    out = {}
    for name, col in (("providers", Flow.provider), ("models", Flow.model), ("cache", Flow.cache)):
        query = Flow.select(col).where(col.is_null(False)).distinct().order_by(col).tuples()
        out[name] = [v for (v,) in query.execute()][:500]
    return out


def iter_flows(filters: Filters, batch: int = 1000) -> Iterator[Flow]:
    """Every matching flow, oldest first, in keyset batches (constant memory for exports)."""
    last: tuple[datetime.datetime, str] | None = None
    while True:
        query = filters.where(Flow.select())
        if last is not None:
            t, fid = last
            query = query.where((Flow.started_at >= t) & ((Flow.started_at > t) | (Flow.id > fid)))
        rows = list(query.order_by(Flow.started_at, Flow.id).limit(batch))
        yield from rows
        if len(rows) < batch:
            return
        last = (rows[-1].started_at, rows[-1].id)


def count(filters: Filters) -> int:
    return filters.where(Flow.select()).count()


# --- aggregates ------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not values:
        return None
    k = max(0, min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1))
    return values[k]


@dataclass
class Group:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0
    cache_hits: int = 0
    cache_lookups: int = 0
    saved_cost_usd: float = 0.0
    ttfb: list[float] = field(default_factory=list)
    duration: list[float] = field(default_factory=list)

    def add(self, status, inp, out, cost, unpriced, cache, saved, ttfb, dur, error) -> None:
        self.requests += 1
        if error or status is None or status >= 400:
            self.errors += 1
        self.input_tokens += inp or 0
        self.output_tokens += out or 0
        self.cost_usd += cost or 0.0
        self.unpriced += 1 if unpriced else 0
        if cache in ("hit", "miss", "refresh"):
            self.cache_lookups += 1
            if cache == "hit":
                self.cache_hits += 1
                self.saved_cost_usd += saved or 0.0
        if ttfb is not None:
            self.ttfb.append(ttfb)
        if dur is not None:
            self.duration.append(dur)

    def merge(self, other: Group) -> Group:
        for name in ("requests", "errors", "input_tokens", "output_tokens", "cost_usd", "unpriced", "cache_hits",
                     "cache_lookups", "saved_cost_usd"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.ttfb += other.ttfb
        self.duration += other.duration
        return self

    def summary(self) -> dict[str, Any]:
        self.ttfb.sort()
        self.duration.sort()
        return {
            "requests": self.requests, "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else 0.0,
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 8), "unpriced": self.unpriced,
            "cache_hits": self.cache_hits,
            "cache_hit_rate": self.cache_hits / self.cache_lookups if self.cache_lookups else None,
            "saved_cost_usd": round(self.saved_cost_usd, 8),
            **{f"ttfb_p{p}_ms": percentile(self.ttfb, p) for p in (50, 95, 99)},
            **{f"duration_p{p}_ms": percentile(self.duration, p) for p in (50, 95, 99)},
        }


_AGG_COLUMNS = (Flow.started_at, Flow.provider, Flow.model, Flow.status, Flow.input_tokens, Flow.output_tokens,
                Flow.cost_usd, Flow.unpriced, Flow.cache, Flow.saved_cost_usd, Flow.ttfb_ms, Flow.duration_ms,
                Flow.error)


def pick_bucket(since: datetime.datetime, until: datetime.datetime) -> int:
    """Bucket width in seconds giving at most ~120 points over the range."""
    span = max(1.0, (until - since).total_seconds())
    for width in (10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400):
        if span / width <= 120:
            return width
    week = 7 * 86400  # and whole weeks past that: a range of centuries still gives ~120 points, not 100,000
    return week * max(1, math.ceil(span / 120 / week))


def analytics(filters: Filters, bucket: int | None = None) -> dict[str, Any]:
    """Totals, a time series, and breakdowns by provider and by provider/model over the range.

    Aggregated in Python over the range's rows (portable across SQLite and PostgreSQL; percentiles
    need every value anyway), reading only the numeric columns.
    """
    until = filters.until or utcnow()
    since = filters.since or (until - datetime.timedelta(hours=24))
    bucket = bucket or pick_bucket(since, until)
    total = Group()
    by_provider: dict[str, Group] = {}
    by_model: dict[tuple[str, str], Group] = {}
    series: dict[int, Group] = {}
    start = since.replace(tzinfo=datetime.UTC).timestamp()
    query = Filters(**{**filters.__dict__, "since": since, "until": until}).where(Flow.select(*_AGG_COLUMNS))
    # A raw cursor: no per-value conversion by peewee, which dominates on big ranges (docs/decisions.md).
    cursor = query.model._meta.database.execute(query)
    for started, provider, model, status, inp, out, cost, unpriced, cache, saved, ttfb, dur, error in cursor:
        values = (status, inp, out, cost, unpriced, cache, saved, ttfb, dur, error)
        # Per model and per bucket only; provider and total groups are merged from the model groups.
        key = (provider or "-", model or "-")
        group = by_model.get(key)
        if group is None:
            group = by_model[key] = Group()
        group.add(*values)
        if isinstance(started, str):
            started = datetime.datetime.fromisoformat(started)
        t = started.replace(tzinfo=datetime.UTC).timestamp()
        slot = int(start + ((t - start) // bucket) * bucket)
        series.setdefault(slot, Group()).add(*values)
    for (provider, _), group in sorted(by_model.items()):
        by_provider.setdefault(provider, Group()).merge(group)
        total.merge(group)
    points = []
    slot = int(start)
    end = until.replace(tzinfo=datetime.UTC).timestamp()
    while slot < end:  # every bucket, also empty ones, so charts show gaps as zeros
        g = series.get(slot)
        s = g.summary() if g else Group().summary()
        points.append({"t": slot, "requests": s["requests"], "errors": s["errors"], "error_rate": s["error_rate"],
                       "tokens": s["input_tokens"] + s["output_tokens"], "input_tokens": s["input_tokens"],
                       "output_tokens": s["output_tokens"], "cost_usd": s["cost_usd"],
                       "ttfb_p50_ms": s["ttfb_p50_ms"], "ttfb_p95_ms": s["ttfb_p95_ms"],
                       "duration_p50_ms": s["duration_p50_ms"], "duration_p95_ms": s["duration_p95_ms"],
                       "cache_hits": s["cache_hits"]})
        slot += bucket
    return {
        "since": iso(since), "until": iso(until), "bucket_seconds": bucket,
        "total": total.summary(),
        "series": points,
        "by_provider": [{"provider": k, **g.summary()} for k, g in sorted(by_provider.items())],
        "by_model": [{"provider": k[0], "model": k[1], **g.summary()} for k, g in sorted(by_model.items())],
    }
