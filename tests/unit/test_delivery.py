"""addon/delivery.py: which answers stream, and the framing of a body Corral shortens."""

from __future__ import annotations

import pytest
from mitmproxy.test import tflow, tutils

from addon import delivery

MiB = 1 << 20


@pytest.mark.parametrize("method, status, headers, streams", [
    ("POST", 200, {"content-type": "application/json", "content-length": "100"}, False),
    ("POST", 200, {"content-type": "application/json; charset=utf-8", "content-length": str(MiB)}, False),
    ("GET", 200, {"content-type": "application/json", "content-length": str(MiB + 1)}, True),  # large
    ("GET", 200, {"content-type": "application/json", "transfer-encoding": "chunked"}, True),  # unknown length
    ("GET", 200, {"content-type": "application/json"}, True),  # read until close
    ("POST", 200, {"content-type": "audio/mpeg", "content-length": "10"}, True),  # not JSON
    ("GET", 200, {"content-type": "application/octet-stream", "content-length": "10"}, True),
    ("GET", 200, {"content-length": "10"}, True),  # no type: not known to be JSON
    ("POST", 400, {"content-type": "application/json", "content-length": "80"}, False),
    ("HEAD", 200, {"content-type": "application/octet-stream", "content-length": str(9 * MiB)}, False),
    ("DELETE", 204, {}, False),
    ("GET", 304, {"content-type": "audio/mpeg"}, False),
])
def test_streams_answer(method: str, status: int, headers: dict[str, str], streams: bool) -> None:
    assert delivery.streams_answer(method, status, headers) is streams


def test_an_answer_made_in_process_is_already_whole() -> None:
    flow = tflow.tflow(resp=tutils.tresp(headers=((b"content-type", b"audio/mpeg"),), content=b"abc"))
    assert not delivery.should_stream(flow)


@pytest.mark.parametrize("http_version, chunked", [("HTTP/1.1", True), ("HTTP/2.0", False)])
def test_a_shortened_body_drops_the_upstream_length(http_version: str, chunked: bool) -> None:
    head = ((b"content-type", b"text/event-stream"), (b"content-length", b"451"))
    flow = tflow.tflow(req=tutils.treq(http_version=http_version.encode()), resp=tutils.tresp(headers=head))
    assert delivery.reframe_for_rewrite(flow)
    assert flow.response is not None and "content-length" not in flow.response.headers
    assert ("chunked" in flow.response.headers.get("transfer-encoding", "")) is chunked
    assert not delivery.reframe_for_rewrite(flow)  # nothing left to drop
