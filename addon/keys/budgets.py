"""Budgets: USD limits per gateway key, per team and per tag, and the state of each (limit, spent, reset).

- a key's own budget: ``corral keys create --budget-usd X --period P`` (the ``gateway_keys`` row);
- a team's: ``[budgets.team.<name>] usd = 5, period = "day"`` covers every key created with ``--team <name>``;
- a tag's: ``[budgets.tag."<k>=<v>"] usd = 20, period = "month"`` covers every key created with ``--tag k=v``.

A request is admitted only if every budget that applies to its key has room (addon/keys/ledger.py).
Periods are calendar periods of ``[keys] timezone`` (day, week from Monday, month) or ``total``.

``BudgetState`` is the interface other parts read (alerts, spend views, the viewer): ``KeyBook.states``
returns one per budget that applies to a key, or ``KeyBook.all_states`` for every configured team and tag
budget.
"""

from __future__ import annotations

import datetime
import functools
import json
from dataclasses import dataclass
from typing import Any

from addon.keys import store

KINDS = ("key", "team", "tag")


@dataclass(frozen=True)
class Budget:
    kind: str  # key | team | tag
    name: str  # the key's id, the team's name, "k=v"
    usd: float
    period: str  # day | week | month | total
    label: str = ""  # how messages name it; defaults to "<kind> <name>"

    @functools.cached_property
    def id(self) -> str:
        """Stable name of the budget: ``key:<id>``, ``team:<name>``, ``tag:<k>=<v>`` (Redis keys, headers)."""
        return f"{self.kind}:{self.name}"

    def describe(self) -> str:
        return self.label or f"{self.kind} {self.name}"


@dataclass(frozen=True)
class BudgetState:
    """One budget in its current period. ``spent_usd`` is what recorded flows count; ``reserved_usd`` the
    estimates of admitted requests still running (both in the shared ledger with Redis)."""

    budget: Budget
    spent_usd: float
    reserved_usd: float
    period_start: datetime.datetime  # naive UTC
    reset_at: datetime.datetime | None  # naive UTC; None: never (period total)

    @property
    def limit_usd(self) -> float:
        return self.budget.usd

    @property
    def fraction(self) -> float:
        """Share of the limit spent (0 for a zero budget with nothing spent)."""
        if self.budget.usd <= 0:
            return 1.0 if self.spent_usd > 0 else 0.0
        return self.spent_usd / self.budget.usd

    def as_dict(self) -> dict[str, Any]:
        return {"budget": self.budget.id, "kind": self.budget.kind, "name": self.budget.name,
                "period": self.budget.period, "limit_usd": self.budget.usd, "spent_usd": round(self.spent_usd, 9),
                "reserved_usd": round(self.reserved_usd, 9), "period_start": self.period_start,
                "reset_at": self.reset_at}


def parse(kind: str, text: str) -> dict[str, Budget]:
    """``corral_budgets_team`` / ``corral_budgets_tag`` (JSON of the [budgets.<kind>.<name>] tables) ->
    {name: Budget}. Raises ValueError with what is wrong."""
    if not text.strip():
        return {}
    try:
        tables = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"must be JSON (it mirrors corral.toml's [budgets.{kind}.<name>] tables): {e}") from None
    if not isinstance(tables, dict):
        raise ValueError(f"expected [budgets.{kind}.<name>] tables")
    out = {}
    for name, table in tables.items():
        where = f"[budgets.{kind}.{json.dumps(name) if kind == 'tag' else name}]"
        if not isinstance(table, dict):
            raise ValueError(f"{where}: expected a table with usd and period")
        unknown = set(table) - {"usd", "period"}
        if unknown:
            raise ValueError(f"{where}: unknown setting {sorted(unknown)[0]!r} (usd, period)")
        usd, period = table.get("usd"), table.get("period", "total")
        if isinstance(usd, bool) or not isinstance(usd, int | float) or usd < 0:
            raise ValueError(f"{where}: usd must be a number >= 0, got {usd!r}")
        if period not in store.PERIODS:
            raise ValueError(f"{where}: period must be one of {', '.join(store.PERIODS)}, got {period!r}")
        if kind == "tag":
            name = "=".join(store.parse_tag(name))
        out[name] = Budget(kind, name, float(usd), period)
    return out


def applicable(record: store.KeyRecord, teams: dict[str, Budget], tags: dict[str, Budget]) -> list[Budget]:
    """Every budget a request with this key counts towards: its own, its team's, its tags'."""
    out = []
    if record.budget_usd is not None:
        out.append(Budget("key", record.id, record.budget_usd, record.period or "total",
                          f"gateway key {record.prefix} ({record.name})"))
    if record.team is not None and record.team in teams:
        out.append(teams[record.team])
    out.extend(tags[t] for t in record.tags if t in tags)
    return out
