"""Paced replay of a cached stream (addon/cache/replay.py) on a fake clock: the head goes out when the
original head came, and every chunk at its recorded offset; exactly, since no real time passes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from addon.cache.backend import Entry
from addon.cache.replay import TOKEN_HEADER, ReplayServer
from addon.relay.upstream_client import Pool
from tests.support.clock import FakeClock

EVENTS = [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"]
OFFSETS = [0.25, 0.5, 1.75]  # seconds after the request, as recorded


@pytest.fixture
async def replay() -> AsyncIterator[tuple[ReplayServer, FakeClock]]:
    server, clock = ReplayServer(), FakeClock()
    server.clock, server.sleep = clock, clock.sleep
    await server.start()
    yield server, clock
    await server.stop()


def entry() -> Entry:
    return Entry(key="k", provider="openai", model="m", status=200, stream=True,
                 headers=[("content-type", "text/event-stream")], body=b"".join(EVENTS),
                 headers_at=0.2, chunks=[(offset, len(e)) for offset, e in zip(OFFSETS, EVENTS, strict=True)])


async def test_each_chunk_goes_out_at_its_recorded_offset(replay) -> None:
    server, clock = replay
    started = clock.now
    token = server.register(entry(), started)
    pool = Pool(None)
    arrivals: list[tuple[float, bytes]] = []

    async def fetch() -> int:
        headers = [(b"host", b"x"), (TOKEN_HEADER.encode(), token.encode()), (b"content-length", b"0")]
        answer = await pool.request("POST", f"http://127.0.0.1:{server.port}/v1/chat/completions", headers, b"", 5)
        head_at = clock.now
        async for piece in answer.stream:
            arrivals.append((round(clock.now - started, 6), piece))
        await answer.aclose()
        return round(head_at - started, 6)

    [head_at] = await clock.run(fetch())
    await pool.aclose()
    assert head_at == 0.2
    assert arrivals == list(zip(OFFSETS, EVENTS, strict=True))


async def test_an_unknown_token_is_a_404_and_nothing_waits(replay) -> None:
    server, clock = replay
    pool = Pool(None)
    headers = [(b"host", b"x"), (TOKEN_HEADER.encode(), b"nope")]
    answer = await pool.request("POST", f"http://127.0.0.1:{server.port}/", headers, b"", 5)
    assert answer.status == 404 and clock.waits == []
    await answer.aclose()
    await pool.aclose()
