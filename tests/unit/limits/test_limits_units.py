"""Unit tests of the rate limiter's pure parts: config parsing, provider headers, window arithmetic."""

from __future__ import annotations

import asyncio
import datetime
import math
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from addon.cli.limits import endpoint
from addon.limits.adaptive import hold_seconds, parse_reset
from addon.limits.config import LimitConfigError, actual_tokens, estimate_tokens, parse_limits
from addon.limits.store import LimitsStore, counter_wait, storage_uri
from tests.support.clock import FakeClock, limits_on
from tests.support.gateway import free_port
from tests.support.reliability import reliability


def test_limits_parse_with_scopes_and_defaults() -> None:
    [lim] = parse_limits([{"name": "a", "requests_per_minute": 5, "tokens_per_minute": 1000, "tokens": "input",
                           "provider": ["openai", "groq"], "model": "gpt-4*", "per": ["credential", "model"],
                           "behaviour": "queue", "max_wait": 2}])
    assert [w.describe() for w in lim.windows] == ["5 requests per minute", "1000 tokens per minute"]
    assert lim.applies("groq", "gpt-4o") and not lim.applies("anthropic", "gpt-4o") and not lim.applies("openai", "o3")
    assert lim.bucket_key({"credential": "fp_1", "model": "gpt-4o"}) == "credential=fp_1,model=gpt-4o"
    [glob] = parse_limits([{"name": "g", "requests_per_second": 1}])
    assert glob.bucket_key({"credential": "fp_1"}) == "*" and glob.behaviour == "reject" and glob.tokens == "total"
    assert parse_limits({}) == []


@pytest.mark.parametrize("table, message", [
    ({"requests_per_minute": 5}, "needs a name"),
    ({"name": "x"}, "set requests_per_minute"),
    ({"name": "x", "requests_per_minute": 0}, "whole number >= 1"),
    ({"name": "x", "requests_per_minute": 5, "per": "team"}, "per must be"),
    ({"name": "x", "requests_per_minute": 5, "behaviour": "drop"}, "behaviour must be"),
    ({"name": "x", "requests_per_minute": 5, "tokens": "cached"}, "tokens must be"),
    ({"name": "x", "requests_per_minute": 5, "max_wait": -1}, "max_wait"),
    ({"name": "x", "requests_per_minute": 5, "rpm": 3}, "unknown key"),
])
def test_bad_limits_are_refused_clearly(table: dict, message: str) -> None:
    with pytest.raises(LimitConfigError, match=message):
        parse_limits([table])


def test_duplicate_names_refused() -> None:
    with pytest.raises(LimitConfigError, match="unique"):
        parse_limits([{"name": "a", "requests_per_minute": 1}, {"name": "a", "requests_per_minute": 2}])


def test_token_estimate_and_actuals() -> None:
    assert estimate_tokens(b"x" * 400, "total") == 100 and estimate_tokens(b"", "input") == 1
    assert estimate_tokens(b"x" * 400, "output") == 0
    usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": None}
    assert [actual_tokens(usage, k) for k in ("input", "output", "total")] == [10, 5, 15]
    assert actual_tokens({"input_tokens": None, "output_tokens": None}, "total") is None
    assert actual_tokens(None, "input") is None


def test_provider_reset_formats() -> None:
    now = 1_000_000.0
    assert parse_reset("1s", now) == 1.0 and parse_reset("6m0s", now) == 360.0
    assert parse_reset("20ms", now) == pytest.approx(0.02) and parse_reset("1m30.5s", now) == 90.5
    assert parse_reset("7", now) == 7.0
    iso = datetime.datetime.fromtimestamp(now + 12, datetime.UTC).isoformat().replace("+00:00", "Z")
    assert parse_reset(iso, now) == pytest.approx(12)
    assert parse_reset("soon", now) is None and parse_reset("", now) is None


def test_hold_from_headers() -> None:
    assert hold_seconds([("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", "2s")], 200) == 2.0
    assert hold_seconds([("x-ratelimit-remaining-requests", "3"), ("x-ratelimit-reset-requests", "2s")], 200) is None
    when = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)).isoformat()
    held = hold_seconds(
        [("anthropic-ratelimit-tokens-remaining", "0"), ("anthropic-ratelimit-tokens-reset", when)], 200
    )
    assert 28 < held <= 30
    assert hold_seconds([("retry-after", "4")], 429) == 4.0
    assert hold_seconds([("retry-after", "4")], 200) is None  # only an error status asks us to back off
    assert hold_seconds([("retry-after-ms", "250"), ("retry-after", "1")], 429) == 0.25


def test_counter_wait_arithmetic() -> None:
    # 60 s window, limit 100; 30 s into the current window.
    assert counter_wait(0, 0, 50, 90, 60, 100, 10) == 0.0  # fits
    # previous window 100 (weight 0.5 -> 50) + current 45 = 95; 10 more must wait for 5 to fade: 3 s
    assert counter_wait(100, 30, 45, 90, 60, 100, 10) == pytest.approx(3.0)
    # current alone is too full (95 + 10 > 100): wait for the window to end (30 s), then fade to 90
    assert counter_wait(0, 0, 95, 90, 60, 100, 10) == pytest.approx(30 + 60 * (1 - 90 / 95))


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The same store contract in memory and on a throwaway loopback Redis (when redis-server exists)."""
    if request.param == "memory":
        yield "memory://"
        return
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server not installed")
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_store_charges_corrections_and_waits(store_url: str) -> None:
    [lim] = parse_limits([{"name": "t", "tokens_per_minute": 100, "requests_per_second": 2}])
    requests = next(w for w in lim.windows if w.what == "requests")
    tokens = next(w for w in lim.windows if w.what == "tokens")

    async def run() -> None:
        store = LimitsStore(store_url)
        assert await store.fits(tokens, "k", 60)
        await store.charge(tokens, "k", 60)
        assert not await store.fits(tokens, "k", 60)
        await store.charge(tokens, "k", -40)  # real usage was 20
        assert await store.used(tokens, "k") == 20 and await store.fits(tokens, "k", 60)
        await store.charge(tokens, "k", -500)  # never below zero
        assert await store.used(tokens, "k") == 0
        assert await store.wait_time(tokens, "k", 101) == math.inf
        for _ in range(2):
            await store.charge(requests, "k", 1)
        assert not await store.fits(requests, "k", 1)
        assert 0.9 < await store.wait_time(requests, "k", 1) <= 1.0

    asyncio.run(run())


def test_storage_uri_and_cli_endpoint() -> None:
    assert storage_uri("memory://") == "async+memory://"
    assert storage_uri("redis://127.0.0.1:6379") == "async+redis://127.0.0.1:6379"
    with pytest.raises(ValueError):
        storage_uri("memory")
    assert endpoint("0.0.0.0:8080") == "http://127.0.0.1:8080/_corral/limits"
    assert endpoint("[::1]:9000") == "http://[::1]:9000/_corral/limits"


def test_memory_store_cleans_up_at_most_once_a_second_and_still_expires_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clean-up task of limits' MemoryStorage ran on every call (a thread-pool job per key);
    Corral's runs once a second, and reads must not depend on it."""
    from addon.limits.store import LazyExpiryMemoryStorage

    clock = FakeClock()  # the windows' time; the clean-up's once-a-second is real time, which barely moves

    async def run() -> tuple[int, int, int]:
        storage = LazyExpiryMemoryStorage()
        runs = 0
        original = storage._MemoryStorage__expire_events

        async def counted() -> None:
            nonlocal runs
            runs += 1
            await original()

        storage._MemoryStorage__expire_events = counted
        for _ in range(200):
            await storage.incr("k", 0.2)
            await storage.acquire_entry("m", 1000, 0.2)
            await asyncio.sleep(0)
        during = await storage.get("k")
        clock.now += 0.3  # past the expiry, but before the next clean-up may run
        return runs, during, await storage.get("k") + (await storage.get_moving_window("m", 1000, 0.2))[1]

    with limits_on(clock, monkeypatch):
        runs, during, after = asyncio.run(run())
    assert runs == 1 and during == 200 and after == 0


@reliability("isolation", "model name in another case than a limit's model glob (RL-a vs rl-*)",
             "the limit applies (matched case-insensitively, one bucket per model)", "row per request")
def test_model_limits_ignore_case() -> None:
    [lim] = parse_limits([{"name": "a", "requests_per_minute": 3, "model": "rl-*", "per": ["model"]}])
    assert lim.applies("openai", "RL-a") and lim.applies("openai", "rl-A") and not lim.applies("openai", "gpt")
    assert lim.bucket_key({"model": "RL-a"}) == lim.bucket_key({"model": "rl-a"})
