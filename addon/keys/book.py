"""KeyBook: the ``[keys]`` settings, the provider credentials, and the caches of verified keys and spend.

Shared by KeyCheck (admission, early in the chain) and KeySpend (after the Recorder, adds each flow's
cost). The database is only read on one thread of its own, never on the event loop: a verified key is
kept ``[keys] cache_ttl`` seconds (so a check costs a dict lookup and one SHA-256, and a revocation takes
effect within that time), the spend of a key ``[keys] spend_ttl`` seconds, plus the cost of this
process's flows whose rows are not in the database yet (the recorder writes in batches).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import peewee
from mitmproxy import ctx, exceptions

from addon import config, paths
from addon.keys import store
from addon.storage import db as dbmod

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


class KeyBook:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.clock, self.wallclock = clock, wallclock
        self.required = False
        self.cache_ttl = 1.0
        self.spend_ttl = 2.0
        self.unpriced_usd = 0.01
        self.timezone = "UTC"
        self.credentials: dict[str, list[str]] = {}
        self._turn: dict[str, int] = {}
        self.url = ""
        self._db: peewee.Database | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-keys")
        self._verified: dict[bytes, tuple[float, store.KeyRecord | None]] = {}  # sha256(key) -> (until, record)
        self._spent: dict[tuple[str, datetime.datetime], tuple[float, float]] = {}  # -> (until, usd in the db)
        self._pending: dict[str, dict[str, float]] = {}  # key id -> {flow id: usd} not yet seen in the db
        self._refreshing: dict[tuple[str, datetime.datetime], asyncio.Future[float]] = {}

    # --- options ----------------------------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option("corral_keys_required", bool, False,
                          "Refuse (401) every provider request without a valid gateway key (corral keys create).")
        loader.add_option("corral_keys_cache_ttl", str, "1",
                          "Seconds a verified gateway key is trusted without the database (revocation delay).")
        loader.add_option("corral_keys_spend_ttl", str, "2",
                          "Seconds a key's spend read from the database is reused (this process adds its own flows).")
        loader.add_option("corral_keys_timezone", str, "UTC",
                          "Time zone of budget periods (calendar day, week from Monday, month), e.g. Europe/Berlin.")
        loader.add_option("corral_keys_unpriced_usd", str, "0.01",
                          "USD a flow with counted tokens but no known price adds to a key's spend.")

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
        self.required = ctx.options.corral_keys_required
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
            self._spent.clear()

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

    # --- spend ------------------------------------------------------------------------------------

    async def spent(self, record: store.KeyRecord) -> float:
        """USD the key spent in its current period: the database's sum (refreshed every spend_ttl s) plus
        this process's flows not yet written."""
        start, _ = store.period_bounds(record.period or "total", self.now(), self.timezone)
        slot = (record.id, start)
        cached = self._spent.get(slot)
        if cached is None or cached[0] <= self.clock():
            running = self._refreshing.get(slot)
            if running is None:  # one query per key at a time, whatever the number of waiting requests
                running = asyncio.ensure_future(self._refresh(record.id, start))
                self._refreshing[slot] = running
                running.add_done_callback(lambda _: self._refreshing.pop(slot, None))
            await asyncio.shield(running)
            cached = self._spent[slot]
        return cached[1] + sum(self._pending.get(record.id, {}).values())

    async def _refresh(self, key_id: str, start: datetime.datetime) -> float:
        pending = list(self._pending.get(key_id, {}))

        def query(db: peewee.Database) -> tuple[float, set[str]]:
            # Which pending flows are written first, then the sum: a row the writer commits in between
            # is counted twice until the next refresh, never not at all (one snapshot on SQLite anyway).
            with db.atomic():
                written = store.recorded_ids(db, pending)
                return store.spent(db, key_id, start, self.unpriced_usd), written

        total, written = await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: query(self._database()))
        flows = self._pending.get(key_id, {})
        for flow_id in written:
            flows.pop(flow_id, None)
        self._spent[(key_id, start)] = (self.clock() + self.spend_ttl, total)
        return total

    def add_spend(self, key_id: str, flow_id: str, usd: float) -> None:
        """A flow of this process was recorded with this cost (counted until its row is read back)."""
        if usd > 0:
            self._pending.setdefault(key_id, {})[flow_id] = usd
