"""The Retrier and its relay in process: attempts, waits, timeouts and fallbacks against scripted
upstreams on the test's own event loop, with the waits between attempts on a fake clock.

Each test asserts on what the relay records (``corral.attempts`` with each ``wait_ms``, and the
waits the fake clock was asked for), never on elapsed time. Upstreams that fail the first N times
are scripted (a 503 N times, a reset or close on the first N connections, a port nobody listens on
until the relay has waited once).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from mitmproxy import http
from mitmproxy.connection import ConnectionState
from mitmproxy.test import taddons, tflow

from addon import metadata as md
from addon.relay.relay import JOB_HEADER
from addon.relay.retrier import Retrier
from addon.relay.upstream_client import Pool, ReadError, RemoteProtocolError, Response
from addon.services import CatalogService
from tests.support.clock import FakeClock
from tests.support.scripted import Scripted, chunk, close, error, never, reset, response
from tests.support.waiting import until_async

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
OK = response(200, json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "choices": []}).encode())
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
EVENTS = [b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n',
          b'data: {"choices": [{"delta": {"content": "b"}}]}\n\n',
          b"data: [DONE]\n\n"]
FALLBACK_KEY = "sk-fallback-key-4242"
CUT = (ReadError, RemoteProtocolError)  # what a client reading from the relay sees of a cut body


class Harness:
    def __init__(self, retrier: Retrier, tctx: taddons.context, clock: FakeClock) -> None:
        self.retrier, self.tctx, self.clock = retrier, tctx, clock

    def configure(self, **options) -> None:
        self.tctx.configure(self.retrier, **options)

    async def request(self, flow: http.HTTPFlow) -> http.HTTPFlow:
        """The Retrier's request hook, its waits on the fake clock."""
        await self.clock.run(self.retrier.request(flow))
        if flow.response is not None:
            self.retrier.responseheaders(flow)
        return flow

    async def relayed(self, flow: http.HTTPFlow) -> Response:
        """Do what mitmproxy does with a flow the Retrier pointed at the relay: send it there."""
        assert flow.request.port == self.retrier.relay.port and JOB_HEADER in flow.request.headers
        pool = Pool(ssl.create_default_context())
        req = flow.request
        headers = [*req.headers.fields, (b"content-length", b"%d" % len(req.raw_content or b""))]
        [answer] = await self.clock.run(pool.request(req.method, req.url, headers, req.raw_content or b"", 5))
        return answer


@pytest.fixture
async def rt(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    monkeypatch.setenv("CORRAL_TEST_FALLBACK_KEY", FALLBACK_KEY)
    catalog = CatalogService()
    retrier = Retrier(catalog)
    clock = FakeClock()
    with taddons.context(catalog, retrier) as tctx:
        tctx.configure(retrier, corral_retries_attempts=3, corral_retries_backoff="0.5", corral_retries_backoff_max="8",
                       corral_retries_max_retry_after="60", corral_retries_connect_timeout="5",
                       corral_retries_ttfb_timeout="5", corral_retries_idle_timeout="5")
        await retrier.running()
        retrier.relay.clock, retrier.relay.sleep = clock, clock.sleep
        yield Harness(retrier, tctx, clock)
        await retrier.done()


def llm_flow(upstream: str, stream: bool = False, provider: str = "openai") -> http.HTTPFlow:
    """A flow as the Router leaves it: routed to ``upstream``, its metadata set."""
    flow = tflow.tflow()
    body = {**CHAT, "stream": True} if stream else CHAT
    flow.request = http.Request.make("POST", upstream + "/v1/chat/completions", json.dumps(body),
                                     {"content-type": "application/json", "authorization": "Bearer sk-client"})
    flow.metadata.update({md.PROVIDER: provider, md.FORMAT: "openai", md.UPSTREAM: upstream,
                          md.STREAM_REQUESTED: stream})
    return flow


def attempts(flow: http.HTTPFlow) -> list[dict]:
    return flow.metadata[md.ATTEMPTS]


# --- waits between attempts -------------------------------------------------------------------------


async def test_retry_after_is_waited_exactly_and_recorded(rt: Harness) -> None:
    async with Scripted([error(429, retry_after="1"), OK]) as up:
        flow = await rt.request(llm_flow(up.url))
    assert flow.response.status_code == 200
    assert [a["status"] for a in attempts(flow)] == [429, 200]
    assert [a["wait_ms"] for a in attempts(flow)] == [1000, None]
    assert sum(rt.clock.waits) == pytest.approx(1.0)
    assert flow.metadata[md.RETRIES] == 1
    assert flow.response.headers["x-corral-retries"] == "1"
    assert flow.response.headers["x-corral-upstream"] == up.url


async def test_each_failure_retry_after_is_read_afresh(rt: Harness) -> None:
    async with Scripted([error(429, retry_after="1"), error(503, retry_after_ms="2000"), OK]) as up:
        flow = await rt.request(llm_flow(up.url))
    assert flow.response.status_code == 200
    assert [a["wait_ms"] for a in attempts(flow)] == [1000, 2000, None]
    assert sum(rt.clock.waits) == pytest.approx(3.0)


async def test_without_retry_after_the_backoff_is_jittered_and_capped(rt: Harness) -> None:
    rt.configure(corral_retries_attempts=5, corral_retries_backoff="0.5", corral_retries_backoff_max="1.5")
    async with Scripted([error(503)] * 4 + [OK]) as up:
        flow = await rt.request(llm_flow(up.url))
    assert flow.response.status_code == 200
    waits = [a["wait_ms"] for a in attempts(flow)][:-1]
    # Full jitter: anywhere from 0 up to 0.5 s * 2^n, never beyond backoff_max.
    for n, wait in enumerate(waits, start=1):
        assert 0 <= wait <= min(500 * 2 ** n, 1500), waits
    assert sum(rt.clock.waits) * 1000 == pytest.approx(sum(waits), abs=4)


async def test_retry_after_above_the_cap_goes_to_the_client_unchanged(rt: Harness) -> None:
    refusal = error(429, retry_after="120", x_ratelimit_reset_requests="2m")
    async with Scripted([refusal, OK]) as up:
        flow = await rt.request(llm_flow(up.url))
        assert len(up.requests) == 1
    assert flow.response.status_code == 429
    assert flow.response.headers["retry-after"] == "120"
    assert flow.response.headers["x-ratelimit-reset-requests"] == "2m"
    assert flow.response.content == refusal.partition(b"\r\n\r\n")[2]
    assert rt.clock.waits == [] and flow.metadata[md.RETRIES] == 0
    assert "x-corral-retries" not in flow.response.headers


async def test_a_client_that_leaves_during_the_wait_ends_the_retries(rt: Harness) -> None:
    async with Scripted([error(429, retry_after="2"), OK]) as up:
        flow = llm_flow(up.url)

        async def leave() -> None:
            await rt.clock.sleep(0.5)
            flow.client_conn.state = ConnectionState.CLOSED

        start = rt.clock.now
        await rt.clock.run(rt.retrier.request(flow), leave())
        assert len(up.requests) == 1  # attempt 2 never made
    assert rt.clock.now - start < 1  # stopped waiting soon after the client left, not after 2 s
    assert flow.response is None and flow.error is not None
    assert "client disconnected" in flow.metadata[md.GATEWAY_ERROR]
    assert flow.metadata[md.RETRIES] == 0


# --- failures before the first byte -----------------------------------------------------------------


@pytest.mark.parametrize("refusal", [reset, close], ids=["reset", "closed"])
async def test_connections_failing_before_the_answer_are_retried(rt: Harness, refusal: Callable) -> None:
    async with Scripted([refusal, refusal, OK]) as up:
        flow = await rt.request(llm_flow(up.url))
        assert up.connections == 3
    assert flow.response.status_code == 200
    tries = attempts(flow)
    assert [a["status"] for a in tries] == [None, None, 200]
    assert all(a["error"] for a in tries[:2])
    assert flow.response.headers["x-corral-retries"] == "2"


async def test_connection_refused_until_the_upstream_comes_back(rt: Harness) -> None:
    up = Scripted([OK])
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()  # the port is free: connecting to it is refused

    async def sleep_then_come_back(seconds: float) -> None:
        await rt.clock.sleep(seconds)
        if not hasattr(up, "server"):
            up.server = await asyncio.start_server(up._serve, "127.0.0.1", port)

    rt.retrier.relay.sleep = sleep_then_come_back
    flow = await rt.request(llm_flow(f"http://127.0.0.1:{port}"))
    up.server.close()
    tries = attempts(flow)
    assert flow.response.status_code == 200
    assert tries[0]["status"] is None and "ConnectError" in tries[0]["error"]
    assert tries[-1]["status"] == 200 and len(tries) == 2


async def test_every_attempt_refused_is_a_502_in_the_providers_shape(rt: Harness) -> None:
    async with Scripted([reset] * 3) as up:
        flow = await rt.request(llm_flow(up.url))
    assert flow.response.status_code == 502
    assert flow.response.headers["x-corral-error"] == "upstream_unavailable"
    message = json.loads(flow.response.content)["error"]["message"]
    assert message.startswith("corral: upstream failed after 3 attempt(s)")
    assert flow.metadata[md.RETRIES] == 2


async def test_no_response_head_within_ttfb_timeout_is_retried(rt: Harness) -> None:
    rt.configure(corral_retries_ttfb_timeout="0.05")
    async with Scripted([never, OK]) as up:
        flow = await rt.request(llm_flow(up.url))
    tries = attempts(flow)
    assert "ttfb_timeout" in tries[0]["error"] and tries[1]["status"] == 200
    assert flow.response.status_code == 200


async def test_ttfb_timeout_on_every_attempt_is_a_504(rt: Harness) -> None:
    rt.configure(corral_retries_ttfb_timeout="0.05")
    async with Scripted([never] * 3) as up:
        flow = await rt.request(llm_flow(up.url))
    assert flow.response.status_code == 504
    assert flow.response.headers["x-corral-error"] == "upstream_timeout"
    assert json.loads(flow.response.content)["error"]["message"]
    assert flow.metadata[md.RETRIES] == 2 and all("ttfb_timeout" in a["error"] for a in attempts(flow))


# --- fallbacks and settings -------------------------------------------------------------------------


async def test_fallback_answers_with_its_own_key_when_the_primary_keeps_failing(rt: Harness) -> None:
    async with Scripted([error(500)] * 3) as primary, Scripted([OK]) as fallback:
        targets = [{"upstream": fallback.url, "api_key_env": "CORRAL_TEST_FALLBACK_KEY"}]
        rt.configure(corral_fallbacks=json.dumps({"openai": {"targets": targets}}))
        flow = await rt.request(llm_flow(primary.url))
        sent = fallback.requests[0].decode()
    assert flow.response.status_code == 200
    assert [a["upstream"] for a in attempts(flow)] == [primary.url] * 3 + [fallback.url]
    assert flow.metadata[md.UPSTREAM] == fallback.url and flow.metadata[md.RETRIES] == 3
    assert f"authorization: Bearer {FALLBACK_KEY}" in sent and "sk-client" not in sent
    assert f"host: 127.0.0.1:{fallback.port}" in sent.lower()
    assert FALLBACK_KEY not in json.dumps(attempts(flow))


async def test_retries_disabled_leave_the_flow_to_mitmproxy(rt: Harness) -> None:
    rt.configure(corral_retries_providers=json.dumps({"deepseek": {"enabled": False}}))
    flow = llm_flow("http://127.0.0.1:9", provider="deepseek")
    await rt.request(flow)
    assert flow.response is None and md.ATTEMPTS not in flow.metadata
    assert flow.request.port == 9 and JOB_HEADER not in flow.request.headers


async def test_statuses_setting_decides_what_is_retried(rt: Harness) -> None:
    rt.configure(corral_retries_statuses="418")
    async with Scripted([response(418), response(503), OK]) as up:
        first = await rt.request(llm_flow(up.url))
        second = await rt.request(llm_flow(up.url))
    assert [a["status"] for a in attempts(first)] == [418, 503]
    assert first.response.status_code == 503 and second.response.status_code == 200


# --- streams go through the relay -------------------------------------------------------------------


def gated_stream(received_first: asyncio.Event) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    """An SSE answer whose rest is only sent once the client has the first event: had anything
    between buffered the stream, the test would never finish."""
    async def send(writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + chunk(EVENTS[0]))
        await writer.drain()
        await received_first.wait()
        writer.write(b"".join(chunk(e) for e in EVENTS[1:]) + b"0\r\n\r\n")
        await writer.drain()
    return send


async def read_stream(answer: Response, received_first: asyncio.Event | None = None) -> list[bytes]:
    got = []
    async for piece in answer.stream:
        got.append(piece)
        if received_first is not None:
            received_first.set()
    await answer.aclose()
    return got


async def test_a_stream_after_two_503s_is_relayed_as_it_arrives(rt: Harness) -> None:
    received_first = asyncio.Event()
    async with Scripted([error(503), error(503), gated_stream(received_first)]) as up:
        flow = await rt.request(llm_flow(up.url, stream=True))
        answer = await rt.relayed(flow)
        assert answer.status == 200
        body = b"".join(await asyncio.wait_for(read_stream(answer, received_first), 10))
    assert body == b"".join(EVENTS)
    assert [a["status"] for a in attempts(flow)] == [503, 503, 200]
    flow.response = http.Response.make(200, b"", dict(answer.headers))
    rt.retrier.responseheaders(flow)
    assert flow.request.port == up.port and JOB_HEADER not in flow.request.headers  # real address back
    assert flow.response.headers["x-corral-retries"] == "2"


async def test_a_stream_answering_a_request_that_asked_for_none_still_streams(rt: Harness) -> None:
    received_first = asyncio.Event()
    async with Scripted([gated_stream(received_first)]) as up:
        flow = await rt.request(llm_flow(up.url, stream=False))  # the inline path meets a stream
        assert flow.response is None  # not buffered into an answer: it goes on through the relay
        answer = await rt.relayed(flow)
        body = b"".join(await asyncio.wait_for(read_stream(answer, received_first), 10))
    assert body == b"".join(EVENTS) and len(up.requests) == 1


async def test_an_idle_stream_is_cut_and_never_retried(rt: Harness) -> None:
    rt.configure(corral_retries_idle_timeout="0.05")

    async def stall(writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + chunk(EVENTS[0]))
        await writer.drain()
        await asyncio.Event().wait()

    async with Scripted([stall, OK]) as up:
        flow = await rt.request(llm_flow(up.url, stream=True))
        answer = await rt.relayed(flow)
        got = []
        with pytest.raises(CUT):  # the relay ends the connection: a body cut short
            async with asyncio.timeout(5):
                async for piece in answer.stream:
                    got.append(piece)
        assert len(up.requests) == 1
    assert b"".join(got) == EVENTS[0]
    assert "idle_timeout" in flow.metadata[md.GATEWAY_ERROR]


async def test_nothing_is_retried_after_the_first_byte(rt: Harness) -> None:
    async def cut(writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + chunk(EVENTS[0]))
        await writer.drain()
        reset(writer)

    async with Scripted([cut, OK]) as up:
        flow = await rt.request(llm_flow(up.url, stream=True))
        answer = await rt.relayed(flow)
        with pytest.raises(CUT):
            await asyncio.wait_for(read_stream(answer), 5)
        assert len(up.requests) == 1
    assert len(attempts(flow)) == 1


# --- JSON answers are made in the request hook ------------------------------------------------------


async def test_a_json_body_cut_by_the_upstream_is_a_clean_502(rt: Harness) -> None:
    async def cut(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"id\": ")
        await writer.drain()
        reset(writer)

    async with Scripted([cut, OK]) as up:
        flow = await rt.request(llm_flow(up.url))
        assert len(up.requests) == 1  # the upstream took the request: never sent twice
    assert flow.response.status_code == 502
    assert flow.response.headers["x-corral-error"] == "upstream_unavailable"
    assert "broke off" in attempts(flow)[-1]["error"]


async def test_the_time_to_first_byte_of_an_inline_answer_is_when_the_head_came(rt: Harness) -> None:
    sent_body_at: list[float] = []
    flow = None

    async def head_then_body(writer: asyncio.StreamWriter) -> None:
        body = b'{"id": "x", "object": "chat.completion", "choices": []}'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body))
        await writer.drain()
        await until_async(lambda: attempts(flow)[-1]["status"] is not None)  # the relay has read the head
        sent_body_at.append(time.time())
        writer.write(body)
        await writer.drain()

    async with Scripted([head_then_body]) as up:
        flow = llm_flow(up.url)
        await rt.request(flow)
    assert flow.response.status_code == 200
    assert flow.response.timestamp_start <= sent_body_at[0] <= flow.response.timestamp_end


async def test_the_request_reaches_the_upstream_as_the_client_sent_it(rt: Harness) -> None:
    body = b'{"model": "gpt-4o-mini",  "messages": [{"role":"user","content":"exact \\u00e9"}]}'
    async with Scripted([OK]) as up:
        flow = llm_flow(up.url)
        flow.request.path = "/v1/chat/completions?api-version=2024-01&x=1"
        flow.request.content = body
        flow.request.headers["x-custom"] = "A b  c"
        flow.request.headers["x-corral-cache"] = "skip"  # Corral's own control: not for the provider
        await rt.request(flow)
        sent = up.requests[0]
    head, _, sent_body = sent.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions?api-version=2024-01&x=1 HTTP/1.1\r\n")
    assert sent_body == body
    assert b"\r\nx-custom: A b  c" in head and b"authorization: Bearer sk-client" in head
    assert b"x-corral" not in head.lower() and JOB_HEADER.encode() not in head.lower()
    assert "x-corral-retries" not in flow.response.headers  # a first answer reaches the client untouched
