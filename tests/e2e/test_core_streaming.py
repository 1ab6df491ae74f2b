"""Streams are passed through chunk by chunk, and every way a stream can end is recorded as such."""

from __future__ import annotations

import datetime
import json
import threading
import time

import httpx

from tests.support import corpus
from tests.support.gateway import Gateway
from tests.support.mock_upstream import Reply
from tests.support.reliability import reliability

NAME = "openai-chat-stream-2"


def stream_request(gateway: Gateway, tag: str, name: str = NAME) -> tuple[httpx.Client, httpx.Request]:
    client = httpx.Client(timeout=20)
    body = json.dumps(corpus.load(name)["request"]["body"]).encode()
    req = client.build_request(
        "POST", gateway.base("openai") + "/v1/chat/completions", content=body,
        headers={"content-type": "application/json", "x-test-id": tag, "authorization": "Bearer sk-test-stream"},
    )
    return client, req


def epoch(started_at: str | datetime.datetime) -> float:
    """A row's started_at (UTC; text on SQLite, a datetime on PostgreSQL) as epoch seconds."""
    return datetime.datetime.fromisoformat(str(started_at)).replace(tzinfo=datetime.UTC).timestamp()


def test_first_chunk_reaches_client_before_upstream_sends_the_last(gateway: Gateway, fresh_mock, tag: str) -> None:
    hold = threading.Event()  # the upstream sends the rest only once the client holds the first chunk
    reply = Reply.from_exchange(NAME, hold=hold)
    fresh_mock.enqueue(reply)
    client, req = stream_request(gateway, tag)
    with client:
        resp = client.send(req, stream=True)
        chunks = resp.iter_raw()
        first = next(chunks)  # a gateway that buffered would never get here (the client times out)
        released_at = time.time()
        hold.set()
        rest = b"".join(chunks)
        resp.close()
    assert first + rest == reply.wire_body()
    row = gateway.row_for(tag)
    assert row["stream"] and row["complete"]
    # The recorded time to first byte is the first chunk's, sent before the rest existed.
    started = epoch(row["started_at"])
    assert started + row["ttfb_ms"] / 1000 <= released_at <= started + row["duration_ms"] / 1000 + 0.001


@reliability(
    "upstream faults",
    "client aborts mid-stream",
    "-",
    "status 200, complete=false, error 'client aborted', partial body kept",
)
def test_client_abort_is_recorded_as_aborted(gateway: Gateway, fresh_mock, tag: str) -> None:
    hold = threading.Event()  # the stream stays mid-way until the client has left
    fresh_mock.enqueue(Reply.from_exchange(NAME, hold=hold))
    client, req = stream_request(gateway, tag)
    with client:
        resp = client.send(req, stream=True)
        next(resp.iter_raw())
        resp.close()  # the client goes away mid-stream
    try:
        row = gateway.row_for(tag)
    finally:
        hold.set()
    assert row["status"] == 200 and row["stream"]
    assert not row["complete"]
    assert "client" in row["error"].lower()
    assert row["response_body"], "the partial stream is kept"


@reliability(
    "upstream faults",
    "upstream resets mid-stream",
    "the bytes so far, then the stream breaks off",
    "complete=false, error 'stream broke off'",
)
def test_upstream_truncation_is_recorded_as_broken(gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.enqueue(Reply.from_exchange(NAME, fault="reset_mid_stream"))
    client, req = stream_request(gateway, tag)
    with client:
        resp = client.send(req, stream=True)
        try:
            resp.read()
        except httpx.HTTPError:
            pass  # the client sees the stream break off, as it would without Corral
        resp.close()
    row = gateway.row_for(tag)
    assert not row["complete"]
    assert row["error"] and "broke off" in row["error"]


def test_stream_without_usage_records_null_not_zero(gateway: Gateway, fresh_mock, tag: str) -> None:
    # Azure's recording has no usage at all (the client did not ask, the mock cannot add it).
    name = "azure-openai-chat-stream-1"
    ex = corpus.load(name)
    with httpx.Client(timeout=20) as client:
        resp = client.post(
            gateway.base("azure") + corpus.request_path(ex), content=json.dumps(ex["request"]["body"]),
            headers={"content-type": "application/json", "x-mock-exchange": name, "x-test-id": tag,
                     "api-key": "azure-secret-key-1"},
        )
    assert resp.content == corpus.response_bytes(ex)
    row = gateway.row_for(tag)
    assert row["stream"] and row["complete"]
    assert row["input_tokens"] is None and row["output_tokens"] is None
    assert row["cost_usd"] is None
    assert "azure-secret-key-1" not in (row["request_headers"] or "")
