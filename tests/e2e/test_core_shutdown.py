"""SIGTERM loses nothing: finished flows are flushed, flows still in flight are recorded as aborted."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import signal
import threading
import time

import httpx
import pytest

from tests.support import corpus
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream, Reply
from tests.support.reliability import reliability

BURST = 60  # finished calls just before the SIGTERM: more than one batch of the record writer


@reliability(
    "load and shutdown",
    "SIGTERM with a stream in flight",
    "finished calls answered; the stream ends",
    "every finished flow flushed; the in-flight stream recorded as aborted",
)
def test_sigterm_flushes_every_flow_and_records_inflight_ones(tmp_path) -> None:
    with MockUpstream() as mock:
        mock.default = "openai-chat-json-2"
        gw = Gateway(mock.url, workdir=tmp_path).start()
        body = json.dumps(corpus.load("openai-chat-json-2")["request"]["body"])

        def call(i: int) -> int:
            return httpx.post(gw.base("openai") + "/v1/chat/completions", content=body, timeout=20,
                              headers={"content-type": "application/json", "x-test-id": f"burst-{i}"}).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(call, range(BURST)))
        assert statuses == [200] * BURST

        # One stream left hanging mid-way when the gateway is told to stop.
        chunks = [b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n']
        mock.enqueue(Reply(status=200, headers={"content-type": "text/event-stream"}, chunks=chunks,
                           fault="stall_mid_stream", stall=30))
        got_first = threading.Event()

        def hanging_stream() -> None:
            try:
                with httpx.stream("POST", gw.base("openai") + "/v1/chat/completions", timeout=30,
                                  content=b'{"model": "gpt-4o", "stream": true, "messages": []}',
                                  headers={"content-type": "application/json", "x-test-id": "hanging"}) as r:
                    for _ in r.iter_raw():
                        got_first.set()
            except httpx.HTTPError:
                pass

        t = threading.Thread(target=hanging_stream, daemon=True)
        t.start()
        assert got_first.wait(10)
        code = gw.stop(signal.SIGTERM)
        t.join(10)

    assert code == 0, gw.log()[-2000:]
    rows = gw.rows()
    burst = [r for r in rows if "burst-" in (r["request_headers"] or "")]
    assert len(burst) == BURST and len({r["id"] for r in burst}) == BURST
    assert all(r["input_tokens"] is not None for r in burst)
    hanging = [r for r in rows if "hanging" in (r["request_headers"] or "")]
    assert len(hanging) == 1
    assert not hanging[0]["complete"] and hanging[0]["error"]


# --- SIGTERM in the middle of concurrent load -------------------------------------------------------

JSON_NAME, STREAM_NAME = "openai-chat-json-2", "openai-chat-stream-1"
CLIENTS = 32
LOAD_BEFORE_SIGTERM = 4.0  # seconds of load first: hundreds of finished calls, every client busy
EXIT_WITHIN = 10.0  # SIGTERM to exit; streams in flight must not hold the gateway up
CHUNK_DELAY = 0.1  # the stream has 6 chunks: ~0.5 s each, so at any moment some are mid-way


@dataclasses.dataclass
class Call:
    """One request as its client saw it. ``outcome``:
    complete    - status 200 and exactly the upstream's bytes, to the end
    answered    - a whole response, but not that one (e.g. the gateway's own 502)
    cut         - response headers came, then the body broke off
    no_response - connected (or reused a connection), then it closed before any response
    refused     - could not connect: the listener was gone, the request never reached the gateway
    """

    test_id: str
    name: str
    outcome: str = "pending"
    status: int | None = None
    detail: str = ""


class LoadClients:
    """CLIENTS threads, each with its own keep-alive connection, sending JSON and streaming calls
    alternately, each with a unique x-test-id, until stopped."""

    def __init__(self, base_url: str) -> None:
        self.url = base_url + "/v1/chat/completions"
        self.bodies = {n: json.dumps(corpus.load(n)["request"]["body"]).encode() for n in (JSON_NAME, STREAM_NAME)}
        self.expected = {n: Reply.from_exchange(n).wire_body() for n in (JSON_NAME, STREAM_NAME)}
        self.calls: list[Call] = []
        self.mid_stream: set[str] = set()  # test ids of streams that got a chunk and have not ended
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(CLIENTS)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self, timeout: float) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "a client thread hung"

    def streams_mid_way(self) -> int:
        with self.lock:
            return len(self.mid_stream)

    def _client(self, n: int) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                call = Call(f"sigterm-{n}-{i}", STREAM_NAME if (n + i) % 2 else JSON_NAME)
                i += 1
                with self.lock:
                    self.calls.append(call)
                self._send(client, call)
                if call.outcome == "refused":
                    time.sleep(0.05)  # the gateway is gone: no busy loop while the test winds down

    def _send(self, client: httpx.Client, call: Call) -> None:
        headers = {"content-type": "application/json", "authorization": "Bearer sk-sigterm",
                   "x-mock-exchange": call.name, "x-test-id": call.test_id}
        try:
            with client.stream("POST", self.url, content=self.bodies[call.name], headers=headers) as resp:
                call.status = resp.status_code
                raw = b""
                for chunk in resp.iter_raw():
                    raw += chunk
                    if call.name == STREAM_NAME:
                        with self.lock:
                            self.mid_stream.add(call.test_id)
            whole = resp.status_code == 200 and raw == self.expected[call.name]
            call.outcome = "complete" if whole else "answered"
        except httpx.ConnectError as e:
            call.outcome, call.detail = "refused", repr(e)
        except httpx.HTTPError as e:  # read/write errors, "server disconnected", incomplete chunked body
            call.outcome, call.detail = ("cut" if call.status is not None else "no_response"), repr(e)
        finally:
            with self.lock:
                self.mid_stream.discard(call.test_id)


def _test_id(row: dict) -> str | None:
    for name, value in json.loads(row["request_headers"] or "[]"):
        if name.lower() == "x-test-id":
            return value
    return None


def _rows_by_call(gw: Gateway) -> tuple[list[dict], dict[str | None, list[dict]]]:
    rows = gw.rows()
    by_call: dict[str | None, list[dict]] = collections.defaultdict(list)
    for row in rows:
        by_call[_test_id(row)].append(row)
    return rows, by_call


@reliability(
    "load and shutdown",
    "SIGTERM under load: 32 clients, JSON calls and streams mid-way (with and without the retry relay)",
    "finished calls answered; calls in flight end (stream cut or connection closed); later ones refused",
    "one row per request that reached the gateway: complete for every complete answer, else not complete with an "
    "error; none doubled; database intact",
)
@pytest.mark.heavy
@pytest.mark.parametrize("route", ["relay", "direct"])
def test_sigterm_during_concurrent_load_leaves_one_truthful_row_per_request(tmp_path, route: str) -> None:
    # "direct": retries off, so flows go straight from mitmproxy to the upstream, not via the relay,
    # whose own shutdown would otherwise cut every stream before the recorder's last pass.
    sets = ["corral_retries_enabled=false"] if route == "direct" else []
    with MockUpstream(chunk_delay=CHUNK_DELAY) as mock:
        gw = Gateway(mock.url, workdir=tmp_path, sets=sets).start()
        clients = LoadClients(gw.base("openai"))
        clients.start()
        time.sleep(LOAD_BEFORE_SIGTERM)
        mid_way_at_sigterm = clients.streams_mid_way()
        sent_at = time.monotonic()
        code = gw.stop(signal.SIGTERM, timeout=EXIT_WITHIN)  # kills (code -9) if it overstays
        exit_seconds = time.monotonic() - sent_at
        time.sleep(0.5)  # clients now meet a closed port: calls are refused
        clients.join(timeout=35)  # a stuck call would end with its 30 s client timeout

    calls = {c.test_id: c for c in clients.calls}
    outcomes = collections.Counter(c.outcome for c in calls.values())
    print(f"\nSIGTERM ({route}) after {LOAD_BEFORE_SIGTERM:g}s of load: exit {code} in {exit_seconds:.2f}s, "
          f"{mid_way_at_sigterm} streams mid-way, outcomes {dict(outcomes)}")
    assert code == 0 and exit_seconds < EXIT_WITHIN, gw.log()[-3000:]
    # The scenario really happened: calls had finished, streams were mid-way when the signal came,
    # and clients kept calling until the gateway was gone.
    assert outcomes["complete"] >= CLIENTS and mid_way_at_sigterm >= 1 and outcomes["refused"] >= 1
    assert outcomes["pending"] == 0

    if not gw.is_postgres:
        # SQLite deletes the WAL when its last connection closes cleanly; a killed writer leaves it.
        # (Checked before this test opens its own reader.)
        assert not (tmp_path / "corral.db-wal").exists(), "the database was not closed cleanly"
    rows, by_call = _rows_by_call(gw)
    assert set(by_call) <= set(calls), "a row for a request no client sent"
    assert len({r["id"] for r in rows}) == len(rows)
    for test_id, call in calls.items():
        found = by_call.get(test_id, [])
        assert len(found) <= 1, f"{test_id} recorded {len(found)} times"
        if call.outcome == "complete":
            assert len(found) == 1 and found[0]["complete"] and found[0]["status"] == 200, (call, found)
        elif call.outcome in ("cut", "answered"):
            # The gateway sent response headers for it, so it handled the flow: it must say so.
            assert len(found) == 1 and not found[0]["complete"] and found[0]["status"] == call.status, (call, found)
        elif call.outcome == "refused":
            assert not found, (call, found)  # never reached the gateway
        # "no_response": it may or may not have reached mitmproxy before the end; at most one row.
    for row in rows:
        assert row["complete"] or row["error"], f"an unfinished exchange recorded without an error: {row}"
        if not row["complete"]:
            assert "client" not in row["error"].lower(), f"no client aborted: the shutdown cut it: {row['error']}"

    if not gw.is_postgres:  # the writer closed the database cleanly: nothing for SQLite to recover
        assert list(gw.query("PRAGMA integrity_check")[0].values()) == ["ok"]
    # No addon failed on the way down, and no connection outlived the shutdown (asyncio reports the
    # tasks of those as destroyed while pending when the loop closes).
    assert "Traceback" not in gw.log() and "Task was destroyed" not in gw.log(), gw.log()[-3000:]
