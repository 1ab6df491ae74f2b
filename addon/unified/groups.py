"""Model aliases and groups for the unified endpoint (``[models.<alias>]``, option ``corral_models``).

    [models.fast]
    targets = ["anthropic/claude-haiku-4-5", "openai/gpt-4o-mini"]
    strategy = "fallback"   # or "round-robin", "weighted" (weights = [...]), "lowest-latency"

``"model": "fast"`` is sent to the targets in the order the strategy gives: the first one is routed like a
``"<provider>/<model>"`` request, the others become fallback targets of the retry relay, each with its own
native request (addon/unified/members.py). The strategy only picks the order; falling back is the relay's
(429, 5xx, timeouts, connection errors: ``[retries] statuses``, never a 4xx the client caused).

``GroupBook`` is a service (addon/services.py): the router reads the groups from it and the retrier the
members the router prepared for a flow. Round-robin counters and latency averages live in this process's
memory: with several workers each keeps its own (a rotation per worker, not a global one).
"""

from __future__ import annotations

import random
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, exceptions

from addon import config
from addon.services import CatalogService
from addon.unified import routing
from providers.catalog import Catalog

STRATEGIES = ("fallback", "round-robin", "weighted", "lowest-latency")
KEYS = frozenset({"targets", "strategy", "weights"})
# Weight of the newest observation in a target's latency average (an exponential moving average).
LATENCY_SMOOTHING = 0.3


class GroupError(ValueError):
    pass


@dataclass(frozen=True)
class Group:
    alias: str
    targets: tuple[str, ...]  # "<provider>/<model>", as the config lists them
    strategy: str = "fallback"
    weights: tuple[float, ...] = ()


def parse_groups(tables: Mapping[str, Any], catalog: Catalog) -> dict[str, Group]:
    """``{alias: {targets, strategy?, weights?}}`` -> groups; raises GroupError naming the table."""
    out: dict[str, Group] = {}
    for alias, table in tables.items():
        where = f"[models.{alias}]"
        if "/" in alias or not alias:
            raise GroupError(f"{where}: an alias cannot contain '/' (that names a provider's model)")
        if not isinstance(table, Mapping):
            raise GroupError(f"{where} must be a table: targets = [\"<provider>/<model>\", ...]")
        unknown = sorted(set(table) - KEYS)
        if unknown:
            raise GroupError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(KEYS))}")
        targets = table.get("targets")
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
            raise GroupError(f"{where}: targets must be a non-empty list of \"<provider>/<model>\"")
        for target in targets:
            try:
                routing.resolve(catalog, target)
            except routing.UnknownModel as e:
                raise GroupError(f"{where}: target {target!r}: {str(e).removeprefix('corral: ')}") from None
        strategy = table.get("strategy", "fallback")
        if strategy not in STRATEGIES:
            raise GroupError(f"{where}: strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        weights = table.get("weights")
        if weights is not None and strategy != "weighted":
            raise GroupError(f"{where}: weights only apply to strategy = \"weighted\"")
        if strategy == "weighted":
            if (not isinstance(weights, list) or len(weights) != len(targets)
                    or not all(isinstance(w, int | float) and not isinstance(w, bool) and w >= 0 for w in weights)
                    or not any(weights)):
                raise GroupError(f"{where}: strategy \"weighted\" needs weights = [...], one number >= 0 per "
                                 f"target ({len(targets)}), not all 0")
        out[alias] = Group(alias, tuple(targets), strategy, tuple(float(w) for w in weights or ()))
    return out


class GroupBook:
    """The groups in force, the order each request tries their targets in, and the members the router
    prepared for a flow until the retrier takes them."""

    def __init__(self, catalog: CatalogService, rng: random.Random | None = None) -> None:
        self.catalog = catalog
        self.groups: dict[str, Group] = {}
        self.rng = rng or random.Random()  # tests hand in a seeded one
        self._turn: dict[str, int] = {}  # alias -> round-robin counter
        self._latency: dict[str, float] = {}  # "<provider>/<model>" -> average seconds to the response head
        self._lock = threading.Lock()  # counters are touched from the event loop only; cheap insurance
        # flow -> prepared members (addon/unified/members.py); a flow that never reaches the retrier (a
        # cache hit, retries off) drops its entry when it is garbage.
        self.pending: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()

    def load(self, loader) -> None:
        loader.add_option(
            "corral_models", str, "",
            "The unified endpoint's model aliases and groups: JSON of corral.toml's [models.<alias>] tables "
            "{alias: {targets: [\"<provider>/<model>\", ...], strategy, weights}}.",
        )

    def configure(self, updated: set[str]) -> None:
        if updated & {"corral_models", "corral_providers"}:
            tables = config.parse_json_option("corral_models", ctx.options.corral_models)
            if not isinstance(tables, dict):
                raise exceptions.OptionsError("corral_models must be a JSON object {alias: {targets: [...]}}")
            try:
                self.groups = parse_groups(tables, self.catalog.current)
            except GroupError as e:
                raise exceptions.OptionsError(str(e)) from None

    def order(self, group: Group) -> list[str]:
        """The targets in the order this request tries them."""
        targets = list(group.targets)
        if group.strategy == "round-robin":
            with self._lock:
                turn = self._turn.get(group.alias, 0)
                self._turn[group.alias] = turn + 1
            start = turn % len(targets)
            return targets[start:] + targets[:start]
        if group.strategy == "weighted":
            return self._weighted(targets, list(group.weights))
        if group.strategy == "lowest-latency":
            # Targets never measured go first (in listed order), so each gets measured once.
            return sorted(targets, key=lambda t: self._latency.get(t, -1.0))
        return targets

    def _weighted(self, targets: list[str], weights: list[float]) -> list[str]:
        """Weighted sampling without replacement: the first target drawn by weight, then the next among
        the rest; zero-weight targets only as the last fallbacks, in listed order."""
        out: list[str] = []
        pool = [(t, w) for t, w in zip(targets, weights, strict=True) if w > 0]
        while pool:
            pick = self.rng.random() * sum(w for _t, w in pool)
            for i, (target, weight) in enumerate(pool):
                pick -= weight
                if pick < 0 or i == len(pool) - 1:
                    out.append(target)
                    del pool[i]
                    break
        return out + [t for t, w in zip(targets, weights, strict=True) if w <= 0]

    def observe_latency(self, target: str, seconds: float) -> None:
        """Time to the response head of a target's successful answer (lowest-latency strategy)."""
        with self._lock:
            old = self._latency.get(target)
            self._latency[target] = seconds if old is None else old + LATENCY_SMOOTHING * (seconds - old)

    def aliases(self) -> Sequence[Group]:
        return list(self.groups.values())
