"""The ``[[limits]]`` tables of corral.toml, parsed and validated into `Limit` objects.

A limit is a set of windows (requests and/or tokens per second/minute/hour/day) over a scope: the flows
it applies to (``provider``, ``model`` glob) and how they are grouped into buckets (``per``). Each
bucket has its own windows: ``per = "credential"`` gives every API key its own budget.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any

from limits import (
    RateLimitItem,
    RateLimitItemPerDay,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    RateLimitItemPerSecond,
)

PERIODS: dict[str, type[RateLimitItem]] = {
    "second": RateLimitItemPerSecond,
    "minute": RateLimitItemPerMinute,
    "hour": RateLimitItemPerHour,
    "day": RateLimitItemPerDay,
}
RATE_KEYS = {f"{what}_per_{period}": (what, period) for what in ("requests", "tokens") for period in PERIODS}
SCOPES = ("global", "credential", "tenant", "provider", "model")
TOKEN_KINDS = ("input", "output", "total")
BEHAVIOURS = ("reject", "queue")
KNOWN_KEYS = {"name", "provider", "model", "per", "behaviour", "max_wait", "tokens", *RATE_KEYS}
DEFAULT_MAX_WAIT = 30.0


class LimitConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Window:
    """One counted window of a limit: requests (exact moving window) or tokens (sliding counter)."""

    limit: str
    what: str  # "requests" | "tokens"
    amount: int
    period: str
    item: RateLimitItem

    @property
    def counter(self) -> bool:
        # Tokens come in thousands per request: a moving window would keep one entry per token.
        return self.what == "tokens"

    def describe(self) -> str:
        return f"{self.amount} {self.what} per {self.period}"


@dataclasses.dataclass(frozen=True)
class Limit:
    name: str
    windows: tuple[Window, ...]
    providers: tuple[str, ...] = ()  # empty: every provider
    models: tuple[str, ...] = ()  # globs; empty: every model
    per: tuple[str, ...] = ()  # scope dimensions; empty: one global bucket
    behaviour: str = "reject"
    max_wait: float = DEFAULT_MAX_WAIT
    tokens: str = "total"

    def applies(self, provider: str | None, model: str | None) -> bool:
        if self.providers and provider not in self.providers:
            return False
        # Case-insensitive: providers accept model names in any case, so "RL-a" must not escape "rl-*".
        if self.models and not any(fnmatch.fnmatchcase((model or "").lower(), glob) for glob in self.models):
            return False
        return True

    def bucket_key(self, values: dict[str, str | None]) -> str:
        """The bucket a flow counts in, e.g. "credential=fp_1a2b3c4d5e6f" ("*" for global)."""
        if not self.per:
            return "*"
        # A model's bucket ignores case too: "GPT-4o" and "gpt-4o" count together.
        return ",".join(
            f"{dim}={(values.get(dim) or '-').lower() if dim == 'model' else values.get(dim) or '-'}"
            for dim in self.per
        )


def _str_list(name: str, key: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
        raise LimitConfigError(f"limit {name!r}: {key} must be a string or a list of strings")
    return tuple(items)


def parse_limit(table: Any, index: int) -> Limit:
    if not isinstance(table, dict):
        raise LimitConfigError(f"[[limits]] entry {index + 1} must be a table")
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise LimitConfigError(f"[[limits]] entry {index + 1} needs a name = \"...\"")
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise LimitConfigError(
            f"limit {name!r}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(KNOWN_KEYS))})"
        )
    windows = []
    for key, (what, period) in RATE_KEYS.items():
        if key not in table:
            continue
        amount = table[key]
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
            raise LimitConfigError(f"limit {name!r}: {key} must be a whole number >= 1")
        windows.append(Window(name, what, amount, period, PERIODS[period](amount)))
    if not windows:
        raise LimitConfigError(
            f"limit {name!r}: set requests_per_minute and/or tokens_per_minute (or _second/_hour/_day)"
        )
    per = _str_list(name, "per", table.get("per", "global"))
    bad = [p for p in per if p not in SCOPES]
    if bad:
        raise LimitConfigError(f"limit {name!r}: per must be one or more of {', '.join(SCOPES)}, got {bad[0]!r}")
    behaviour = table.get("behaviour", "reject")
    if behaviour not in BEHAVIOURS:
        raise LimitConfigError(f"limit {name!r}: behaviour must be \"reject\" or \"queue\", got {behaviour!r}")
    tokens = table.get("tokens", "total")
    if tokens not in TOKEN_KINDS:
        raise LimitConfigError(f"limit {name!r}: tokens must be one of {', '.join(TOKEN_KINDS)}, got {tokens!r}")
    max_wait = table.get("max_wait", DEFAULT_MAX_WAIT)
    if isinstance(max_wait, bool) or not isinstance(max_wait, (int, float)) or max_wait < 0:
        raise LimitConfigError(f"limit {name!r}: max_wait must be a number of seconds >= 0")
    return Limit(
        name=name,
        windows=tuple(windows),
        providers=_str_list(name, "provider", table["provider"]) if "provider" in table else (),
        models=tuple(g.lower() for g in _str_list(name, "model", table["model"])) if "model" in table else (),
        per=tuple(p for p in per if p != "global"),
        behaviour=behaviour,
        max_wait=float(max_wait),
        tokens=tokens,
    )


def parse_limits(value: Any) -> list[Limit]:
    """Limits from the JSON of the ``corral_limits`` option (a list of tables; {} means none)."""
    if value in ({}, None, []):
        return []
    if not isinstance(value, list):
        raise LimitConfigError("limits must be an array of tables: [[limits]] name = ... (or a JSON list)")
    limits = [parse_limit(table, i) for i, table in enumerate(value)]
    names = [lim.name for lim in limits]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LimitConfigError(f"limit names must be unique: {', '.join(dupes)}")
    return limits


def actual_tokens(usage: dict[str, Any] | None, kind: str) -> int | None:
    """The tokens a finished flow really used, by the limit's ``tokens`` kind; None when unknown."""
    if not usage:
        return None
    inp, out = usage.get("input_tokens"), usage.get("output_tokens")
    if kind == "input":
        return inp
    if kind == "output":
        return out
    if usage.get("total_tokens") is not None:
        return usage["total_tokens"]
    if inp is None and out is None:
        return None
    return (inp or 0) + (out or 0)


def estimate_tokens(body: bytes | None, kind: str) -> int:
    """Admission estimate: request body bytes / 4 for input (JSON overhead makes it generous);
    output is unknowable before the answer, so an output-only window is charged afterwards."""
    if kind == "output":
        return 0
    return max(1, len(body or b"") // 4)
