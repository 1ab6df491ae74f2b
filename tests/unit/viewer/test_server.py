"""The Viewer addon in process: its tornado server on a free loopback port, over a temporary database.

A query that takes long runs on a worker thread, never on the event loop (flows share that loop), and
an API with a token refuses every request without it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import httpx
import pytest
from mitmproxy.test import taddons
from prometheus_client import CollectorRegistry

from addon.storage import db as dbmod, queries
from addon.viewer.server import Viewer
from tests.support.gateway import free_port
from tests.support.reliability import reliability
from tests.support.waiting import until_async


@pytest.fixture
async def viewer(tmp_path) -> AsyncIterator[tuple[taddons.context, Viewer, str]]:
    dbmod.connect(f"sqlite:///{tmp_path / 'corral.db'}")
    viewer = Viewer(CollectorRegistry())
    port = free_port()
    with taddons.context(viewer) as tctx:
        tctx.configure(viewer, corral_viewer_listen=f"127.0.0.1:{port}")
        yield tctx, viewer, f"http://127.0.0.1:{port}/"
        viewer.done()


async def test_a_slow_query_runs_off_the_event_loop(viewer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The query holds until the test lets it go, and the test can only do that from the event loop:
    had the query run on the loop, nothing could release it and it would give up (released False)."""
    _, addon, url = viewer
    entered, release, outcome = threading.Event(), threading.Event(), {}
    real = queries.analytics

    def held_analytics(*args, **kwargs):
        entered.set()
        outcome["released"] = release.wait(5)
        return real(*args, **kwargs)

    monkeypatch.setattr(queries, "analytics", held_analytics)
    addon.running()
    async with httpx.AsyncClient(timeout=10) as client:
        pending = asyncio.ensure_future(client.get(url + "api/analytics", params={"since": "1h"}))
        await until_async(entered.is_set)  # the loop keeps turning while the query waits on its thread
        assert not pending.done()
        release.set()
        answer = await pending
    assert answer.status_code == 200 and answer.json()["total"]["requests"] == 0
    assert outcome["released"] is True


@reliability("isolation", "viewer API call without or with a wrong token", "401", "-")
async def test_api_with_a_token_refuses_requests_without_it(viewer) -> None:
    tctx, addon, url = viewer
    tctx.configure(addon, corral_viewer_token="t0ken-for-test")
    addon.running()
    async with httpx.AsyncClient(timeout=10) as client:
        for path in ("api/flows", "api/facets", "api/analytics", "api/flows/x", "metrics"):
            r = await client.get(url + path)
            assert r.status_code == 401, path
            assert "t0ken" not in r.text
            assert (await client.get(url + path, headers={"Authorization": "Bearer wrong"})).status_code == 401
        bearer = {"Authorization": "Bearer t0ken-for-test"}
        assert (await client.get(url + "api/flows", headers=bearer)).status_code == 200
        assert (await client.get(url + "api/flows", params={"token": "t0ken-for-test"})).status_code == 200
        assert (await client.get(url + "metrics", params={"token": "t0ken-for-test"})).status_code == 200
        assert (await client.get(url)).status_code == 200  # the static page itself holds no data
