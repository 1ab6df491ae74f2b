"""SIGTERM loses nothing: finished flows are flushed, flows still in flight are recorded as aborted."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import threading

import httpx

from tests.support import corpus
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream, Reply
from tests.support.reliability import reliability


@reliability("load and shutdown", "SIGTERM with a stream in flight", "finished calls answered; the stream ends", "every finished flow flushed; the in-flight stream recorded as aborted")
def test_sigterm_flushes_every_flow_and_records_inflight_ones(tmp_path) -> None:
    with MockUpstream() as mock:
        mock.default = "openai-chat-json-2"
        gw = Gateway(mock.url, workdir=tmp_path).start()
        body = json.dumps(corpus.load("openai-chat-json-2")["request"]["body"])

        def call(i: int) -> int:
            return httpx.post(gw.base("openai") + "/v1/chat/completions", content=body, timeout=20,
                              headers={"content-type": "application/json", "x-test-id": f"burst-{i}"}).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(call, range(200)))
        assert statuses == [200] * 200

        # One stream left hanging mid-way when the gateway is told to stop.
        chunks = [b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n']
        mock.enqueue(Reply(status=200, headers={"content-type": "text/event-stream"}, chunks=chunks, fault="stall_mid_stream", stall=30))
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
    assert len(burst) == 200 and len({r["id"] for r in burst}) == 200
    assert all(r["input_tokens"] is not None for r in burst)
    hanging = [r for r in rows if "hanging" in (r["request_headers"] or "")]
    assert len(hanging) == 1
    assert not hanging[0]["complete"] and hanging[0]["error"]
