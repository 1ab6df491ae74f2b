"""A very long stream through a real gateway (100 MB of text deltas): the client gets every byte, the
gateway's peak RSS stays near its baseline, and the record keeps ``body_limit`` of text. Heavy
(`make test-heavy`): 100 MB over loopback twice."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.gateway import Gateway, new_tag
from tests.support.mock_upstream import MockUpstream, Reply
from tests.support.reliability import reliability

pytestmark = pytest.mark.heavy

MiB = 1 << 20


@reliability(
    "upstream faults", "endless SSE stream (100 MB of text deltas through the gateway)",
    "every byte, as it arrives", "response_text clipped to body_limit; gateway peak RSS stays near its baseline",
)
def test_a_100mb_stream_does_not_grow_the_gateway(mock: MockUpstream, tmp_path_factory) -> None:
    delta = b"data: " + json.dumps({"model": "gpt-4o", "choices": [{"delta": {"content": "y" * 10_000}}]}).encode()
    chunks = [delta + b"\n\n"] * 10_000 + [b"data: [DONE]\n\n"]
    mock.reset()
    mock.chunk_delay = 0
    mock.enqueue(Reply(200, {"content-type": "text/event-stream"}, chunks=chunks))
    with Gateway(mock.url, workdir=tmp_path_factory.mktemp("endless")) as gw:
        assert gw.proc is not None
        tag = new_tag()
        body = {"model": "gpt-4o", "stream": True, "messages": []}
        received = 0
        with httpx.Client(timeout=120) as client, client.stream(
            "POST", gw.base("openai") + "/v1/chat/completions", json=body,
            headers={"x-test-id": tag, "authorization": "Bearer sk-endless"},
        ) as resp:
            for piece in resp.iter_raw():
                received += len(piece)
        row = gw.row_for(tag, timeout=60)
        peak = gw.peak_rss()
    assert resp.status_code == 200 and received == sum(len(c) for c in chunks)
    print(f"gateway peak RSS {peak / MiB:.0f} MiB after a {received / MiB:.0f} MiB stream")
    assert peak < 320 * MiB, f"gateway peak RSS {peak / MiB:.0f} MiB"
    assert len(row["response_text"]) < 4 * MiB + 100
