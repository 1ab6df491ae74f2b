"""Spend from the record: the exact recorded cost of flows grouped by gateway key, team, tag, provider or
model, with a time series per group. Shared by `corral spend` and the viewer's ``GET /api/spend``.

Only what was recorded is summed: ``cost_usd`` of priced flows. A flow whose tokens were counted but
had no known price is *unpriced*: it is counted apart (``unpriced``), never as $0, and a group of only
unpriced flows has ``cost_usd`` None. (Budget admission counts such a flow as ``[keys] unpriced_usd``;
this view shows what is known.) Team and tag come from the key's row (``gateway_keys.team`` / ``tags``
when the key has them); a flow of a key with several tags counts once under each tag.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

from addon.storage.models import Flow, GatewayKey, database_proxy
from addon.storage.queries import QueryError, iso, pick_bucket, utcnow

GROUPS = ("key", "team", "tag", "provider", "model")
NO_TEAM, NO_TAG, NO_KEY = "(no team)", "(no tag)", "(no key)"
SERIES_GROUPS = 8  # groups drawn in the chart; the rest are summed as "other"


@dataclass
class Sum:
    flows: int = 0
    cost_usd: float = 0.0
    priced: int = 0
    unpriced: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, cost: float | None, unpriced: bool, inp: int | None, out: int | None) -> None:
        self.flows += 1
        if cost is not None:
            self.cost_usd += cost
            self.priced += 1
        elif unpriced:
            self.unpriced += 1
        self.input_tokens += inp or 0
        self.output_tokens += out or 0

    def as_dict(self) -> dict[str, Any]:
        return {"flows": self.flows, "cost_usd": round(self.cost_usd, 9) if self.priced else None,
                "unpriced": self.unpriced, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


def _tags(value: Any) -> list[str]:
    """A key's tags as ``k=v`` strings, whatever way the row keeps them (JSON object or list)."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return [value]
    if isinstance(value, dict):
        return [f"{k}={v}" for k, v in sorted(value.items())]
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _key_rows() -> dict[str, dict[str, Any]]:
    rows: list[dict[str, Any]] = list(GatewayKey.select().dicts().execute(database_proxy))
    return {r["id"]: r for r in rows}


def labels_of(by: str, key_row: dict[str, Any] | None, key_id: str | None, provider: str | None,
              model: str | None) -> list[str]:
    if by == "provider":
        return [provider or "-"]
    if by == "model":
        return [f"{provider or '-'}/{model or '-'}"]
    if key_id is None:
        return [NO_KEY]
    if by == "key":
        return [f"ck-{key_id}"]
    if by == "team":
        return [str((key_row or {}).get("team") or NO_TEAM)]
    return _tags((key_row or {}).get("tags")) or [NO_TAG]


def spend(by: str, since: datetime.datetime, until: datetime.datetime | None = None,
          bucket: int | None = None, keys_only: bool | None = None) -> dict[str, Any]:
    """Spend per group of ``by`` over [since, until), most expensive first, and a series per group.

    ``keys_only`` (default: for key/team/tag) leaves out flows that presented no gateway key."""
    if by not in GROUPS:
        raise QueryError(f"--by must be one of {', '.join(GROUPS)}, got {by!r}")
    until = until or utcnow()
    if until <= since:
        raise QueryError("--until must be after --since")
    bucket = bucket or pick_bucket(since, until)
    keys_only = by in ("key", "team", "tag") if keys_only is None else keys_only
    key_rows = _key_rows()
    query = Flow.select(Flow.started_at, Flow.gateway_key, Flow.provider, Flow.model, Flow.cost_usd, Flow.unpriced,
                        Flow.input_tokens, Flow.output_tokens).where(Flow.started_at >= since, Flow.started_at < until)
    if keys_only:
        query = query.where(Flow.gateway_key.is_null(False))
    groups: dict[str, Sum] = {}
    total = Sum()
    series: dict[str, dict[int, float]] = {}
    start = since.replace(tzinfo=datetime.UTC).timestamp()
    cursor = query.model._meta.database.execute(query)  # raw tuples, as queries.analytics
    for started, key_id, provider, model, cost, unpriced, inp, out in cursor:
        total.add(cost, bool(unpriced), inp, out)
        if isinstance(started, str):
            started = datetime.datetime.fromisoformat(started)
        slot = int(start + ((started.replace(tzinfo=datetime.UTC).timestamp() - start) // bucket) * bucket)
        for label in labels_of(by, key_rows.get(key_id) if key_id else None, key_id, provider, model):
            groups.setdefault(label, Sum()).add(cost, bool(unpriced), inp, out)
            if cost:
                points = series.setdefault(label, {})
                points[slot] = points.get(slot, 0.0) + cost
    rows = []
    for label, group in sorted(groups.items(), key=lambda item: (-item[1].cost_usd, -item[1].unpriced, item[0])):
        row: dict[str, Any] = {by: label, **group.as_dict()}
        if by == "key" and label.startswith("ck-"):
            key_row = key_rows.get(label[3:]) or {}
            row["name"] = key_row.get("name")
            row["budget_usd"], row["period"] = key_row.get("budget_usd"), key_row.get("period")
        rows.append(row)
    slots = list(range(int(start), int(until.replace(tzinfo=datetime.UTC).timestamp()), bucket))
    shown = [r[by] for r in rows if r[by] in series][:SERIES_GROUPS]
    lines = {label: [round(series[label].get(t, 0.0), 9) for t in slots] for label in shown}
    rest = [label for label in series if label not in shown]
    if rest:
        lines["other"] = [round(sum(series[label].get(t, 0.0) for label in rest), 9) for t in slots]
    return {"by": by, "since": iso(since), "until": iso(until), "bucket_seconds": bucket, "rows": rows,
            "total": total.as_dict(), "series": {"t": slots, "lines": lines}}
