"""A stream whose text outgrows the body limit: the client gets every byte, the record keeps at most
``[storage] body_limit`` characters of reassembled text (with a marker) and still the usage at its end."""

from __future__ import annotations

import json

import httpx

from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream, Reply
from tests.support.reliability import reliability

LIMIT = 4 * 1024 * 1024  # corral_storage_body_limit's default


def event(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


@reliability(
    "upstream faults", "stream whose text outgrows body_limit (5 MiB of deltas)",
    "every byte, as it arrives", "response_text clipped to body_limit with a marker; usage at the end still counted",
)
def test_long_stream_text_is_clipped_in_the_record_and_usage_still_counted(
    gateway: Gateway, fresh_mock: MockUpstream, tag: str
) -> None:
    delta = event({"model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "x" * 10_000}}]})
    usage = event({"model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 525,
                                                                "total_tokens": 528}})
    chunks = [delta] * 525 + [usage, b"data: [DONE]\n\n"]
    fresh_mock.chunk_delay = 0
    fresh_mock.enqueue(Reply(200, {"content-type": "text/event-stream"}, chunks=chunks))
    body = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True}, "messages": []}
    with httpx.Client(timeout=60) as client, client.stream(
        "POST", gateway.base("openai") + "/v1/chat/completions", json=body,
        headers={"x-test-id": tag, "authorization": "Bearer sk-long"},
    ) as resp:
        received = b"".join(resp.iter_raw())
    assert resp.status_code == 200 and received == b"".join(chunks)
    row = gateway.row_for(tag, timeout=30)
    text = row["response_text"]
    assert text == "x" * LIMIT + f"\n[corral: clipped at {LIMIT} characters]"
    assert row["output_tokens"] == 525 and row["complete"]
