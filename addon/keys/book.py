"""KeyBook: the ``[keys]`` and ``[budgets]`` settings, the provider credentials, verified keys and the
budget ledgers.

Shared by KeyCheck (admission, early in the chain) and KeySpend (after the Recorder, settles each
flow's cost). The database is only read on one thread of its own, never on the event loop: a verified
key is kept ``[keys] cache_ttl`` seconds (so a check costs a dict lookup and one SHA-256, and a
revocation takes effect within that time on every instance), budget sums ``[keys] spend_ttl`` seconds
(addon/keys/ledger.py: in this process, or in Redis with ``[state] url``), or the budgets are kept in the
database itself (addon/keys/dbledger.py, ``[keys] ledger``).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import peewee
from mitmproxy import ctx, exceptions, http

from addon import config, metadata as md, paths, state
from addon.keys import budgets, ledger as ledgers, store
from addon.keys.dbledger import DatabaseLedger
from addon.limits.config import estimate_tokens
from addon.services import PricingService, SharedState
from addon.state import StateUnavailable
from addon.storage import db as dbmod
from addon.workers import WORKER_ENV

logger = logging.getLogger(__name__)


def provider_credentials(providers_json: str) -> dict[str, list[str]]:
    """{provider: [credential, ...]} from ``[providers.<name>] api_key`` ("env:VAR", a list of them, or
    a literal). Raises OptionsError for a variable that is not set."""
    out: dict[str, list[str]] = {}
    for name, table in config.parse_json_option("corral_providers", providers_json).items():
        value = table.get("api_key") if isinstance(table, dict) else None
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        resolved = []
        for item in values:
            if not isinstance(item, str) or not item:
                raise exceptions.OptionsError(f"[providers.{name}] api_key: expected \"env:VAR\" or a list of them")
            if item.startswith("env:"):
                var = item[4:]
                if not os.environ.get(var):
                    raise exceptions.OptionsError(f"[providers.{name}] api_key: environment variable {var} is not set")
                item = os.environ[var]
            resolved.append(item)
        out[name] = resolved
    return out


_MAX_OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def max_output_tokens(body: bytes | None) -> int:
    """The output cap a request sets (OpenAI, Anthropic, Responses, Gemini field names), else 0. Read only
    for the first request of a model (later ones are estimated from the last one's cost)."""
    if not body or len(body) > 1 << 20:
        return 0
    try:
        data = json.loads(body)
    except ValueError:
        return 0
    if not isinstance(data, dict):
        return 0
    config = data.get("generationConfig")
    values = [data.get(f) for f in _MAX_OUTPUT_FIELDS]
    values.append(config.get("maxOutputTokens") if isinstance(config, dict) else None)
    return next((v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0), 0)


class KeyBook:
    def __init__(self, pricing: PricingService | None = None, shared_state: SharedState | None = None,
                 clock: Callable[[], float] = time.monotonic, wallclock: Callable[[], float] = time.time) -> None:
        self.pricing, self.shared_state = pricing, shared_state
        self.clock, self.wallclock = clock, wallclock
        self.required = False
        self.cache_ttl = 0.5
        self.spend_ttl = 2.0
        self.unpriced_usd = 0.01
        self.unpriced_per_1k: float | None = None
        self.unpriced = "charge"
        self.timezone = "UTC"
        self.team_budgets: dict[str, budgets.Budget] = {}
        self.tag_budgets: dict[str, budgets.Budget] = {}
        self.credentials: dict[str, list[str]] = {}
        self._turn: dict[str, int] = {}
        self.url = ""
        self._db: peewee.Database | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-keys")
        self._verified: dict[bytes, tuple[float, store.KeyRecord | None]] = {}  # sha256(key) -> (until, record)
        self.memory = ledgers.MemoryLedger(self._read, clock)
        self.shared: ledgers.RedisLedger | DatabaseLedger | None = None  # [keys] ledger: redis or database
        self._learned: dict[tuple[str | None, str | None], float] = {}  # (provider, model) -> last charge
        self._applying: dict[store.KeyRecord, list[budgets.Budget]] = {}  # record -> its budgets, per config
        self._asked: dict[str, tuple[str | None, str | None]] = {}  # flow id -> (provider, model) estimated

    # --- options ----------------------------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option("corral_keys_required", bool, False,
                          "Refuse (401) every provider request without a valid gateway key (corral keys create).")
        loader.add_option("corral_keys_cache_ttl", str, "0.5",
                          "Seconds a verified gateway key is trusted without the database (revocation delay).")
        loader.add_option("corral_keys_spend_ttl", str, "2",
                          "Seconds a key's spend read from the database is reused (this process adds its own flows).")
        loader.add_option("corral_keys_ledger", str, "auto",
                          "Where budgets are counted: memory (this process), database (exact across the processes "
                          "sharing it), redis ([state] url), or auto: redis with [state] url, database with "
                          "--workers, else memory.")
        loader.add_option("corral_keys_timezone", str, "UTC",
                          "Time zone of budget periods (calendar day, week from Monday, month), e.g. Europe/Berlin.")
        loader.add_option("corral_keys_unpriced_usd", str, "0.01",
                          "USD a flow with counted tokens but no known price (or a success without usage) "
                          "adds to its budgets.")
        loader.add_option("corral_keys_unpriced_per_1k", str, "",
                          "If set: USD per 1,000 tokens an unpriced flow adds instead of unpriced_usd.")
        loader.add_option("corral_keys_unpriced", str, "charge",
                          "Budgeted requests to a model without a price: charge (the unpriced rule) or refuse (403).")
        loader.add_option("corral_budgets_team", str, "",
                          "JSON of corral.toml's [budgets.team.<name>] tables: usd and period per team.")
        loader.add_option("corral_budgets_tag", str, "",
                          "JSON of corral.toml's [budgets.tag.\"<k>=<v>\"] tables: usd and period per key tag.")

    def configure(self, updated: set[str]) -> None:
        for name in ("corral_keys_cache_ttl", "corral_keys_spend_ttl", "corral_keys_unpriced_usd"):
            if name in updated:
                try:
                    value = float(getattr(ctx.options, name))
                except ValueError:
                    value = -1.0
                if not 0 <= value < 1e9:
                    raise exceptions.OptionsError(f"[keys] {name.removeprefix('corral_keys_')}: expected a "
                                                  f"number >= 0, got {getattr(ctx.options, name)!r}")
                setattr(self, name.removeprefix("corral_keys_"), value)
        self.memory.ttl = self.spend_ttl
        self.required = ctx.options.corral_keys_required
        if "corral_keys_unpriced_per_1k" in updated:
            text = ctx.options.corral_keys_unpriced_per_1k.strip()
            try:
                per_1k = float(text) if text else None
            except ValueError:
                per_1k = -1.0
            if per_1k is not None and not 0 <= per_1k < 1e9:
                raise exceptions.OptionsError(f"[keys] unpriced_per_1k: expected a number >= 0, got {text!r}")
            self.unpriced_per_1k = per_1k
        if ctx.options.corral_keys_unpriced not in ("charge", "refuse"):
            raise exceptions.OptionsError(f"[keys] unpriced: expected \"charge\" or \"refuse\", "
                                          f"got {ctx.options.corral_keys_unpriced!r}")
        self.unpriced = ctx.options.corral_keys_unpriced
        for kind in ("team", "tag"):
            if f"corral_budgets_{kind}" in updated:
                try:
                    parsed = budgets.parse(kind, getattr(ctx.options, f"corral_budgets_{kind}"))
                except ValueError as e:
                    raise exceptions.OptionsError(f"[budgets.{kind}]: {e}") from None
                setattr(self, f"{kind}_budgets", parsed)
                self._applying.clear()
        self._choose_ledger()
        if "corral_keys_timezone" in updated:
            try:
                store.zone(ctx.options.corral_keys_timezone)
            except ValueError as e:
                raise exceptions.OptionsError(f"[keys] timezone: {e}") from None
            self.timezone = ctx.options.corral_keys_timezone
        if "corral_providers" in updated:
            self.credentials = provider_credentials(ctx.options.corral_providers)
        if "corral_storage_db" in updated:
            self.url = dbmod.normalise_url(ctx.options.corral_storage_db or paths.default_db_url())
            self._db = None
            self._verified.clear()
            self.memory.clear()

    def _choose_ledger(self) -> None:
        mode = ctx.options.corral_keys_ledger
        url = getattr(ctx.options, "corral_state_url", "memory://")
        if mode not in ("auto", "memory", "database", "redis"):
            raise exceptions.OptionsError(f"[keys] ledger: expected \"auto\", \"memory\", \"database\" or "
                                          f"\"redis\", got {mode!r}")
        if mode == "redis" and not state.is_redis(url):
            raise exceptions.OptionsError("[keys] ledger = \"redis\" needs [state] url = \"redis://...\"")
        if mode == "auto":  # one process: memory is exact and costs no query; several: they must share
            mode = "redis" if state.is_redis(url) else "database" if os.environ.get(WORKER_ENV) else "memory"
        if mode == "redis":
            if not isinstance(self.shared, ledgers.RedisLedger) or self.shared.url != url:
                self.shared = ledgers.RedisLedger(url, self._read)
        elif mode == "database":
            if not isinstance(self.shared, DatabaseLedger):
                self.shared = DatabaseLedger(self._off_loop, self._seed, self.wallclock)
        else:
            self.shared = None

    def on_failure(self) -> str:
        return self.shared_state.on_failure if self.shared_state is not None else "open"

    def done(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- provider credentials ---------------------------------------------------------------------

    def credential_for(self, provider: str) -> str | None:
        """The next configured credential of ``provider`` (several spread the load in turn)."""
        values = self.credentials.get(provider)
        if not values:
            return None
        turn = self._turn.get(provider, 0)
        self._turn[provider] = turn + 1
        return values[turn % len(values)]

    # --- off the loop -----------------------------------------------------------------------------

    def _database(self) -> peewee.Database:
        if self._db is None:  # opened on the keys thread; the recorder has created the schema
            self._db = dbmod.open_url(self.url)
        return self._db

    async def _off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        # One thread: queries run one after another, on one connection.
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(self._database(), *args))

    def now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.wallclock(), datetime.UTC).replace(tzinfo=None)

    # --- keys -------------------------------------------------------------------------------------

    async def verify(self, token: str) -> store.KeyRecord | None:
        """The record of a key this gateway issued (revoked/expired included; the caller decides), or None."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        cached = self._verified.get(digest)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        record = await self._off_loop(store.verify, token) if store.key_id_of(token) else None
        if len(self._verified) > 10_000:  # made-up keys must not grow the cache without end
            self._verified.clear()
        self._verified[digest] = (self.clock() + self.cache_ttl, record)
        return record

    # --- budgets ------------------------------------------------------------------------------

    def budgets_of(self, record: store.KeyRecord) -> list[budgets.Budget]:
        """Every budget a request with this key counts towards (its own, its team's, its tags')."""
        found = self._applying.get(record)
        if found is None:
            if len(self._applying) > 10_000:
                self._applying.clear()
            found = self._applying[record] = budgets.applicable(record, self.team_budgets, self.tag_budgets)
        return found

    async def _read(self, budget: budgets.Budget, start: datetime.datetime,
                    pending: list[str]) -> tuple[float, set[str]]:
        def query(db: peewee.Database) -> tuple[float, set[str]]:
            # Which pending flows are written first, then the sum: a row the writer commits in between
            # is counted twice until the next refresh, never not at all (one snapshot on SQLite anyway).
            with db.atomic():
                written = store.recorded_ids(db, pending)
                ids = store.key_ids(db, budget.kind, budget.name)
                return store.spent(db, ids, start, self.unpriced_usd, self.unpriced_per_1k), written

        return await self._off_loop(query)

    def _seed(self, db: peewee.Database, budget: budgets.Budget, start: datetime.datetime) -> float:
        """The recorded flows' charge in a budget's period (on the keys thread): a database ledger slot's seed."""
        ids = store.key_ids(db, budget.kind, budget.name)
        return store.spent(db, ids, start, self.unpriced_usd, self.unpriced_per_1k)

    def estimate(self, flow: http.HTTPFlow) -> float | None:
        """What a request will probably cost, reserved at admission: the last exact charge of a request
        to the same provider and model in this process, else its input (body bytes / 4 tokens) and its
        ``max_tokens`` (if it sets one) at the model's price, else the unpriced rule. None: no price and
        ``[keys] unpriced = "refuse"``."""
        meta = flow.metadata
        learned = self._learned.get((meta.get(md.PROVIDER), meta.get(md.MODEL)))
        if learned is not None:
            return learned
        body = flow.request.raw_content
        tokens = estimate_tokens(body, "input")
        if self.pricing is not None:
            usage = {"input_tokens": tokens, "output_tokens": max_output_tokens(body)}
            price = self.pricing.price({**meta, md.USAGE: usage})
            if price.cost_usd is not None:
                return price.cost_usd
        if self.unpriced == "refuse":
            return None
        return store.charge(None, True, tokens, True, self.unpriced_usd, self.unpriced_per_1k)

    def charge(self, flow: http.HTTPFlow) -> float:
        """What a finished flow counts towards its budgets (store.charge: never nothing when unknown)."""
        meta = flow.metadata
        usage = meta.get(md.USAGE) or {}
        inp, out = usage.get("input_tokens"), usage.get("output_tokens")
        tokens = None if inp is None and out is None else (inp or 0) + (out or 0)
        answered = (flow.response is not None and 200 <= flow.response.status_code < 300
                    and meta.get(md.CACHE) != "hit" and md.GATEWAY_ERROR not in meta)
        unpriced = meta.get(md.COST_USD) is None and tokens is not None and self.pricing is not None
        return store.charge(meta.get(md.COST_USD), unpriced, tokens, answered, self.unpriced_usd,
                            self.unpriced_per_1k)

    async def admit(self, flow_id: str, applying: list[budgets.Budget],
                    estimate: float) -> tuple[ledgers.Refusal | None, str | None]:
        """Reserve ``estimate`` on every budget if all have room: (the refusal or None, a degradation note).
        Raises StateUnavailable when the shared ledger is unavailable and ``[state] on_failure = "closed"``."""
        now = self.now()
        if self.shared is None:
            return await self.memory.admit(flow_id, applying, estimate, now, self.timezone), None
        try:
            return await self.shared.admit(flow_id, applying, estimate, now, self.timezone), None
        except StateUnavailable as e:
            if self.on_failure() == "closed":
                raise
            # Open: this process's own count still holds the line (exact within it, like the memory ledger).
            refusal = await self.memory.admit(flow_id, applying, estimate, now, self.timezone)
            return refusal, f"budgets: {e}; counted by this process only (on_failure = open)"

    def holds(self, flow_id: str) -> bool:
        return self.memory.holds(flow_id) or (self.shared is not None and self.shared.holds(flow_id))

    def asked(self, flow: http.HTTPFlow) -> None:
        """A request with a gateway key goes ahead: remember the model it asked for (the answer may name
        another, a dated version), under which its charge becomes the next estimate."""
        self._asked[flow.id] = (flow.metadata.get(md.PROVIDER), flow.metadata.get(md.MODEL))

    async def finished(self, flow: http.HTTPFlow) -> None:
        """A flow with a gateway key ended: learn its charge; settle its budgets if it reserved any."""
        asked = self._asked.pop(flow.id, None)
        if asked is None and not self.holds(flow.id):
            return
        usd = self.charge(flow)
        if usd > 0 and asked is not None:
            if len(self._learned) > 10_000:  # model names come from clients: never an unbounded dict
                self._learned.clear()
            self._learned[asked] = usd
        if self.holds(flow.id):
            await self.settle(flow, usd)

    async def settle(self, flow: http.HTTPFlow, usd: float) -> None:
        """The admitted flow ended: its reservation becomes its exact charge (0 gives it back)."""
        if self.memory.holds(flow.id):
            await self.memory.settle(flow.id, usd)
        elif self.shared is not None:
            await self.shared.settle(flow.id, usd)

    async def states(self, applying: list[budgets.Budget]) -> list[budgets.BudgetState]:
        """Limit, spent, reserved and reset of these budgets now (from Redis when shared): the interface
        for alerts, spend views and the viewer. ``states(book.budgets_of(record))`` for one key,
        ``states(book.configured())`` for every team and tag budget."""
        ledger = self.shared or self.memory
        return await ledger.states(applying, self.now(), self.timezone)

    def configured(self) -> list[budgets.Budget]:
        """The team and tag budgets of ``[budgets]`` (a key's own budget is on its row)."""
        return [*self.team_budgets.values(), *self.tag_budgets.values()]
