"""The RateLimiter in process, on a fake clock: queue order and pace, other tenants, clients that
leave, max_wait, adaptive holds. Every wait is virtual, so the assertions are exact facts about the
recorded wait (``corral.wait_ms``) and the virtual time a flow was let through, not wall-clock gaps."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from mitmproxy import exceptions, http
from mitmproxy.connection import ConnectionState
from mitmproxy.test import taddons, tflow

from addon import metadata as md
from addon.limits.accounting import WAIT_HEADER, RateLimitAccounting
from addon.limits.limiter import STEP, LimitBook, RateLimiter, snapshot
from addon.services import SharedState
from tests.support.clock import FakeClock, limits_on

QUEUE = {"name": "per-tenant", "requests_per_second": 2, "provider": "openai", "per": "tenant",
         "behaviour": "queue", "max_wait": 10}


class Limiter:
    """A RateLimiter and its accounting half on one fake clock, configured through mitmproxy options."""

    def __init__(self, clock: FakeClock, tctx: taddons.context, limiter: RateLimiter,
                 accounting: RateLimitAccounting) -> None:
        self.clock, self.tctx, self.limiter, self.accounting = clock, tctx, limiter, accounting
        self.book = limiter.book
        self.admitted: dict[str, float] = {}  # flow.id -> virtual time the limiter let it go

    def configure(self, *limits: dict, **options) -> None:
        self.tctx.configure(self.limiter, corral_limits=json.dumps(list(limits)),
                            corral_limits_settings_tenant_header=True, **options)
        self.book.store.clock = self.clock  # a configured state URL makes a new store

    async def admit(self, flow: http.HTTPFlow) -> http.HTTPFlow:
        await self.limiter.request(flow)
        self.admitted[flow.id] = self.clock.now
        return flow

    def held_ms(self, flow: http.HTTPFlow) -> float | None:
        return flow.metadata.get(md.WAIT_MS)


@pytest.fixture
def lim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Limiter]:
    clock = FakeClock()
    book = LimitBook()
    shared = SharedState()
    limiter, accounting = RateLimiter(book, shared), RateLimitAccounting(book)
    limiter.clock, limiter.sleep, book.clock = clock, clock.sleep, clock
    with limits_on(clock, monkeypatch), taddons.context(shared, limiter, accounting) as tctx:
        harness = Limiter(clock, tctx, limiter, accounting)
        harness.configure(QUEUE)
        yield harness


def flow(tenant: str = "t1", provider: str = "openai", credential: str = "fp_shared",
         body: bytes = b"{}") -> http.HTTPFlow:
    f = tflow.tflow()
    f.request.method = "POST"
    f.request.path = "/v1/chat/completions"
    f.request.content = body
    f.request.headers["x-corral-tenant"] = tenant
    f.metadata.update({md.PROVIDER: provider, md.MODEL: "gpt-4.1", md.CREDENTIAL: credential})
    return f


def since_start(lim: Limiter, flows: list[http.HTTPFlow]) -> list[float]:
    start = min(lim.admitted.values())
    return [round(lim.admitted[f.id] - start, 3) for f in flows]


async def test_queued_flows_go_first_come_first_served_at_the_window_pace(lim: Limiter) -> None:
    flows = [flow() for _ in range(6)]
    await lim.clock.run(*(lim.admit(f) for f in flows))
    assert all(f.response is None and f.error is None for f in flows)
    released = since_start(lim, flows)
    # Two per moving second: each pair goes once the pair before it has left the window.
    assert released == sorted(released)
    for i in range(2, 6):
        assert released[i] - released[i - 2] == pytest.approx(1.0, abs=STEP + 0.01), released
    assert released[:2] == [0.0, 0.0]
    waits = [lim.held_ms(f) for f in flows]
    assert waits[:2] == [None, None]  # went at once: nothing to report
    for f, released_at in zip(flows[2:], released[2:], strict=True):
        assert lim.held_ms(f) == pytest.approx(released_at * 1000, abs=1)
    assert lim.book.queues == {}  # nobody left behind in a queue


async def test_a_small_request_does_not_overtake_a_big_one_that_waits(lim: Limiter) -> None:
    """First come, first served even when the later request would fit right now."""
    lim.configure({"name": "tps", "tokens_per_second": 100, "provider": "openai", "per": "tenant",
                   "behaviour": "queue", "max_wait": 10})
    first, big, small = flow(body=b"x" * 320), flow(body=b"x" * 240), flow(body=b"x" * 40)  # 80, 60, 10 tokens

    async def later() -> http.HTTPFlow:
        await lim.clock.sleep(0.1)  # the big one is queued by now; 80 + 10 would fit
        return await lim.admit(small)

    await lim.clock.run(lim.admit(first), lim.admit(big), later())
    assert lim.held_ms(big) is not None and lim.held_ms(small) is not None
    assert lim.admitted[first.id] < lim.admitted[big.id] <= lim.admitted[small.id]


async def test_the_client_is_told_how_long_it_was_held(lim: Limiter) -> None:
    flows = [flow() for _ in range(3)]
    await lim.clock.run(*(lim.admit(f) for f in flows))
    for f in flows:
        f.response = http.Response.make(200)
        lim.accounting.responseheaders(f)
    assert [WAIT_HEADER in f.response.headers for f in flows] == [False, False, True]
    assert int(flows[2].response.headers[WAIT_HEADER]) == round(lim.held_ms(flows[2]))


async def test_an_unrelated_tenant_is_not_held_behind_a_busy_one(lim: Limiter) -> None:
    busy = [flow("busy") for _ in range(8)]
    other = flow("other")

    async def later() -> http.HTTPFlow:
        await lim.clock.sleep(0.3)  # the busy tenant's queue is long by now
        return await lim.admit(other)

    await lim.clock.run(*(lim.admit(f) for f in busy), later())
    assert lim.admitted[other.id] == pytest.approx(min(lim.admitted.values()) + 0.3)
    assert lim.held_ms(other) is None
    assert lim.held_ms(busy[-1]) == pytest.approx(3000, abs=2 * STEP * 1000)


async def test_a_client_that_leaves_while_queued_takes_no_slot_and_leaves_the_queue(lim: Limiter) -> None:
    first, second, gone = flow(), flow(), flow()

    async def leave() -> None:
        await lim.clock.sleep(0.3)
        gone.client_conn.state = ConnectionState.CLOSED

    await lim.clock.run(lim.admit(first), lim.admit(second), lim.admit(gone), leave())
    assert gone.error is not None and gone.error.msg == "Connection killed."
    assert gone.metadata[md.GATEWAY_ERROR].startswith("client disconnected while queued")
    assert lim.held_ms(gone) == pytest.approx(300, abs=STEP * 1000)
    report = await snapshot(lim.book)
    bucket = report["limits"][0]["buckets"][0]
    assert bucket["windows"][0]["used"] == 2 and bucket["queued"] == 0
    assert md.RATELIMIT not in gone.metadata  # never counted


async def test_a_wait_beyond_max_wait_is_a_429_at_once(lim: Limiter) -> None:
    lim.configure({"name": "short-wait", "requests_per_minute": 1, "provider": "groq", "per": "tenant",
                   "behaviour": "queue", "max_wait": 1})
    first, second = flow(provider="groq"), flow(provider="groq")
    await lim.clock.run(lim.admit(first))
    lim.clock.now += 1  # a second later the window still has 59 s to go
    await lim.clock.run(lim.admit(second))
    assert first.response is None
    assert lim.clock.waits == []  # rejected without queueing at all
    assert second.response.status_code == 429
    assert second.response.headers["retry-after"] == "59"
    assert second.response.headers["x-corral-ratelimit-name"] == "short-wait"
    assert json.loads(second.response.content)["error"]["message"].startswith("rate limited by corral")


async def test_queued_flows_that_would_pass_max_wait_are_rejected_with_their_wait(lim: Limiter) -> None:
    lim.configure({"name": "tight-wait", "requests_per_second": 2, "provider": "mistral", "per": "tenant",
                   "behaviour": "queue", "max_wait": 1.2})
    flows = [flow(provider="mistral") for _ in range(6)]
    await lim.clock.run(*(lim.admit(f) for f in flows))
    # Two now, two a second later; the last two would need two seconds: more than max_wait.
    assert [f.response is None for f in flows] == [True] * 4 + [False] * 2
    for f in flows[4:]:
        assert f.response.status_code == 429
        assert lim.held_ms(f) == pytest.approx(1000, abs=2 * STEP * 1000)  # queued, then gave up


async def test_a_reject_limit_answers_at_once_and_never_sleeps(lim: Limiter) -> None:
    lim.configure({"name": "rpm", "requests_per_minute": 2, "provider": "openai", "per": "credential"})
    flows = [flow(credential=c) for c in ("fp_a", "fp_a", "fp_a", "fp_b")]
    await lim.clock.run(*(lim.admit(f) for f in flows))
    assert [f.response.status_code if f.response else None for f in flows] == [None, None, 429, None]
    assert lim.clock.waits == []
    assert flows[2].response.headers["retry-after"] == "60"


async def test_adaptive_hold_queues_that_credential_until_the_provider_resets(lim: Limiter) -> None:
    lim.configure(corral_limits_settings_adaptive=True, corral_limits_settings_adaptive_max_wait=5)
    exhausted = flow(credential="fp_held")
    exhausted.response = http.Response.make(200, b"{}", {"x-ratelimit-remaining-requests": "0",
                                                          "x-ratelimit-reset-requests": "1.5s"})
    exhausted.server_conn.timestamp_start = 1.0  # it came from the provider
    lim.accounting.responseheaders(exhausted)
    held, other = flow(credential="fp_held"), flow(credential="fp_other")
    start = lim.clock.now
    await lim.clock.run(lim.admit(held), lim.admit(other))
    assert held.response is None and other.response is None
    assert lim.admitted[other.id] == start and lim.held_ms(other) is None
    assert lim.admitted[held.id] - start == pytest.approx(1.5, abs=STEP)
    assert lim.held_ms(held) == pytest.approx(1500, abs=STEP * 1000)


async def test_adaptive_hold_longer_than_its_max_wait_is_a_429(lim: Limiter) -> None:
    lim.configure(corral_limits_settings_adaptive=True, corral_limits_settings_adaptive_max_wait=5)
    exhausted = flow()
    exhausted.response = http.Response.make(429, b"{}", {"retry-after": "20"})
    exhausted.server_conn.timestamp_start = 1.0
    lim.accounting.responseheaders(exhausted)
    held = flow()
    await lim.clock.run(lim.admit(held))
    assert held.response.status_code == 429 and lim.clock.waits == []
    assert "adaptive" in json.loads(held.response.content)["error"]["message"]


def test_a_bad_limit_is_an_options_error_that_names_it(lim: Limiter) -> None:
    """What stops the gateway at start with a clear message (an OptionsError from configure)."""
    with pytest.raises(exceptions.OptionsError, match="requests_per_minute must be a whole number"):
        lim.configure({"name": "x", "requests_per_minute": 0})
