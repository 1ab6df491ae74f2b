"""`corral start --workers N`: N gateway processes on one port, one shared record, one supervisor.

Runs on the suite's backend (SQLite by default; CORRAL_TEST_DB=postgres for PostgreSQL). The
supervisor's decisions (startup failure, restart, SIGTERM, a taken port) are tested with stand-in
workers in tests/unit/test_workers.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import corpus
from tests.support.gateway import Gateway, free_port
from tests.support.mock_upstream import MockUpstream
from tests.support.waiting import until

JSON_NAME = "openai-chat-json-2"
STREAM_NAME = "openai-chat-stream-1"


async def _mixed(gw: Gateway, total: int, concurrency: int, tag: str) -> list[int]:
    """``total`` requests, JSON and streams alternating, each on a new connection (the kernel
    spreads connections, not requests, over the workers)."""
    bodies = {n: json.dumps(corpus.load(n)["request"]["body"]).encode() for n in (JSON_NAME, STREAM_NAME)}
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        name = STREAM_NAME if i % 2 else JSON_NAME
        async with sem, httpx.AsyncClient(timeout=60) as client:
            async with client.stream("POST", gw.base("openai") + "/v1/chat/completions", content=bodies[name],
                                     headers={"content-type": "application/json", "x-mock-exchange": name,
                                              "x-test-id": f"{tag}{i}", "authorization": "Bearer sk-w"}) as resp:
                await resp.aread()
                return resp.status_code

    return list(await asyncio.gather(*(one(i) for i in range(total))))


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _listeners(port: int) -> int:
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


GRACE = 1  # [gateway] worker_startup_grace: a crash after this second is a crash in service


@pytest.fixture(scope="module")
def workers_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, int, float]]:
    """Two workers (and the viewer, in worker 1) on one port; the tests below share them, in order."""
    viewer_port = free_port()
    with MockUpstream(chunk_delay=0.0) as mock:
        mock.default = JSON_NAME
        gw = Gateway(mock.url, workdir=tmp_path_factory.mktemp("workers"), args=["--workers", "2"],
                     config={"gateway": {"worker_startup_grace": GRACE}, "config": {"reload_interval": 0}},
                     sets=[f"corral_viewer_listen=127.0.0.1:{viewer_port}"])
        started = time.monotonic()
        gw.start()
        try:
            until(lambda: _listeners(gw.port) == 2, timeout=20, message="two workers should listen on the port")
            yield gw, viewer_port, started
        finally:
            gw.stop()


def test_two_workers_record_every_request_exactly_once(workers_gw) -> None:
    gw, viewer_port, _ = workers_gw
    total = 100  # connections: the kernel puts all of them on one worker with probability 2**-99
    until(lambda: _listeners(viewer_port) == 1, timeout=20)  # the viewer runs in worker 1 only
    assert "could not listen" not in gw.log()
    assert len(_children(gw.proc.pid)) == 2
    statuses = asyncio.run(_mixed(gw, total, 24, "workers-"))
    assert statuses == [200] * total
    rows = gw.wait_rows(lambda r: "workers-" in (r["request_headers"] or ""), total)
    assert len(rows) == total, f"{len(rows)} rows for {total} requests"
    assert len({r["id"] for r in rows}) == total
    tags = {next(v for k, v in json.loads(r["request_headers"]) if k == "x-test-id") for r in rows}
    assert tags == {f"workers-{i}" for i in range(total)}
    assert all(r["input_tokens"] is not None for r in rows)
    assert sum(bool(r["stream"]) for r in rows) == total // 2
    per_worker = {w: sum(r["worker"] == w for r in rows) for w in (1, 2)}
    assert per_worker[1] > 0 and per_worker[2] > 0, per_worker  # both processes served traffic
    assert per_worker[1] + per_worker[2] == total


def test_sighup_to_the_supervisor_reloads_every_worker(workers_gw) -> None:
    gw, _, _ = workers_gw
    text = gw.config_path.read_text()
    gw.config_path.write_text(text + "\n[cache]\nttl = 77\n")
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)
    until(lambda: gw.log().count("configuration reloaded") == 2, timeout=20,
          message="both workers should reload:\n" + gw.log())
    assert gw.log().count("[cache] ttl") == 2
    assert _listeners(gw.port) == 2  # nobody died of the signal


def test_a_crashed_worker_is_restarted_and_sigterm_stops_all(workers_gw) -> None:
    gw, _, started = workers_gw
    time.sleep(max(0.0, started + GRACE - time.monotonic()))  # (the scenario) past the startup grace
    first = _children(gw.proc.pid)
    os.kill(first[0], signal.SIGKILL)
    until(lambda: len(set(_children(gw.proc.pid)) - set(first)) == 1, timeout=20, message="no replacement worker")
    until(lambda: _listeners(gw.port) == 2, timeout=20)
    assert asyncio.run(_mixed(gw, 20, 4, "restarted-")) == [200] * 20
    workers = _children(gw.proc.pid)
    code = gw.stop(signal.SIGTERM)
    assert code == 0, gw.log()[-3000:]
    assert "restarting it" in gw.log()
    assert not any(Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
                   for pid in workers), "workers outlived the supervisor"
    assert len([r for r in gw.rows() if "restarted-" in (r["request_headers"] or "")]) == 20


@pytest.mark.heavy
def test_5000_requests_on_two_workers_give_exactly_5000_rows(tmp_path) -> None:
    from tests.e2e.test_load import _hammer

    total = 5_000  # the 20,000-request run on one process is tests/e2e/test_load.py
    with MockUpstream(chunk_delay=0.0) as mock:
        gw = Gateway(mock.url, workdir=tmp_path, args=["--workers", "2"]).start()
        try:
            until(lambda: _listeners(gw.port) == 2, timeout=20)
            statuses = asyncio.run(_hammer(gw, total, 64))
        finally:
            assert gw.stop() == 0
    assert statuses.count(200) == total
    [counts] = gw.query("SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids, COUNT(DISTINCT worker) AS workers FROM flows")
    assert counts == {"n": total, "ids": total, "workers": 2}

