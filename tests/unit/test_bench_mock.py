"""The bench's mock upstream (bench/mock.py) serves what the benchmark relies on: a JSON chat
completion with usage, and an SSE stream with its chunks, a usage chunk and ``data: [DONE]``, with
latency and chunking taken from the model name. No timing assertions: speed lives in bench/."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import mock  # noqa: UP026 - bench/mock.py, not the mock backport

from tests.support.gateway import free_port


@pytest.fixture(scope="module")
def bench_mock():
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    settings = mock.Settings()

    def run() -> None:
        asyncio.set_event_loop(loop)
        started = asyncio.Event()

        async def main() -> None:
            task = asyncio.create_task(mock.serve("127.0.0.1", port, settings, started))
            await started.wait()
            ready.set()
            await task

        try:
            loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"http://127.0.0.1:{port}", settings
    loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
    thread.join(5)


def test_json_completion_with_usage(bench_mock) -> None:
    url, settings = bench_mock
    before = settings.requests
    with httpx.Client() as client:
        for _ in range(3):  # keep-alive: several requests on one connection
            r = client.post(f"{url}/v1/chat/completions", json={"model": "bench-x", "messages": []})
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/json"
            body = r.json()
            assert body["model"] == "bench-x"
            assert body["choices"][0]["message"]["content"]
            assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    assert settings.requests == before + 3


def sse_payloads(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.split("\n\n") if line.startswith("data: ")]


@pytest.mark.parametrize("include_usage", [True, False])
def test_sse_stream_chunks_usage_and_done(bench_mock, include_usage: bool) -> None:
    url, _ = bench_mock
    body = {"model": "bench-d1-n5", "messages": [], "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    with httpx.Client() as client, client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        assert r.headers["transfer-encoding"] == "chunked"
        text = "".join(r.iter_text())
    payloads = sse_payloads(text)
    assert payloads[-1] == "[DONE]"
    events = [json.loads(p) for p in payloads[:-1]]
    content = [e["choices"][0]["delta"].get("content") for e in events if e["choices"]]
    assert [c for c in content if c] == [f"tok{i} " for i in range(5)]  # n5: five content chunks
    usage = [e["usage"] for e in events if e.get("usage")]
    assert usage == ([{"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}] if include_usage else [])


def test_model_name_sets_latency_and_chunking(bench_mock) -> None:
    _, settings = bench_mock
    assert settings.profile(b"bench-l300-d5-n10")[1:] == (0.3, 0.005, 10)
    assert settings.profile(b"bench")[1:] == (0.0, 0.0, 8)


def test_pipelined_requests_answered_in_order(bench_mock) -> None:
    """A stream followed by a JSON request on the same connection: answers come back in order."""
    url, _ = bench_mock
    port = int(url.rsplit(":", 1)[1])

    async def go() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for model, stream in (("bench-d2-n3", True), ("bench", False)):
            body = json.dumps({"model": model, "stream": stream}).encode()
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
        data = b""
        while b'"object":"chat.completion"' not in data:
            more = await asyncio.wait_for(reader.read(65536), 5)
            assert more
            data += more
        writer.close()
        return data

    data = asyncio.run(go())
    assert data.index(b"data: [DONE]") < data.index(b'"object":"chat.completion"')


def test_anthropic_messages_json_and_stream_parse_with_the_anthropic_sdk(bench_mock) -> None:
    """The unified endpoint's budget system translates to Anthropic: the mock must speak it well enough
    for Anthropic's own SDK (JSON, and the stream's events with usage)."""
    import anthropic

    url, settings = bench_mock
    before = settings.requests
    client = anthropic.Anthropic(base_url=url, api_key="sk-bench", max_retries=0)
    message = client.messages.create(model="bench-x", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "Hello from the bench mock." and message.usage.output_tokens == 7
    with client.messages.stream(model="bench-d0-n3", max_tokens=16,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "tok0 tok1 tok2 "
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 3
    assert settings.requests == before + 2


def test_otlp_export_is_accepted_and_not_counted_as_a_request(bench_mock) -> None:
    url, settings = bench_mock
    before = settings.requests
    with httpx.Client() as client:
        for path in ("/v1/traces", "/v1/metrics"):
            r = client.post(url + path, content=b"\x0a\x00", headers={"content-type": "application/x-protobuf"})
            assert r.status_code == 200 and r.content == b""
    assert settings.requests == before  # the request counter delimits the bench's CPU windows
