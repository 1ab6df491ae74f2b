"""50 MB bodies both ways: forwarded byte for byte, recorded with the stored body clipped, and the
gateway keeps serving. Heavy (`make test-heavy`): each test moves ~100 MB over loopback several times.

The 20 MB request case in test_core_bad_input.py runs with every `make test`; these go further: a body
12x the storage limit, non-ASCII text (a re-serialising or re-encoding gateway would change bytes),
a response as big as the request, and a bound on the gateway's memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.gateway import Gateway, new_tag
from tests.support.mock_upstream import MockUpstream, Reply
from tests.support.reliability import reliability

pytestmark = pytest.mark.heavy

CHAT = "/openai/v1/chat/completions"
BODY_SIZE = 50 * 1024 * 1024
STORE_LIMIT = 4 * 1024 * 1024  # corral_storage_body_limit's default
# Peak resident memory allowed to the gateway (VmHWM: a peak over the process's life). A 50 MB body
# lives in it a few times over (client side, retry relay, upstream side, parsed JSON): measured
# ~370 MiB after the request test, ~500 MiB after the response test. The bound catches copies
# multiplying (per chunk, per hook) or bodies kept after their flow ended, not the exact count.
GATEWAY_PEAK_RSS = 1024 * 1024 * 1024
# Text with multi-byte UTF-8, quotes, backslashes and newlines that JSON must escape.
LINE = 'Zeile: naïve café — 日本語 «quoted» "q" back\\slash\nend. '
OK = Reply(
    status=200,
    headers={"content-type": "application/json"},
    body=b'{"id": "small", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}',
)


def _text_of(size: int) -> str:
    """About ``size`` bytes of varied text, deterministic."""
    line_bytes = len(LINE.encode())
    return "".join(f"{i:08d} {LINE}" for i in range(size // (line_bytes + 9)))


def _compact(doc: dict) -> bytes:
    # No spaces and raw (not \u-escaped) non-ASCII: json.dumps' defaults would produce other bytes,
    # so a gateway that parsed and re-serialised the body could not pass the byte comparison.
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _split_at_limit(build: Callable[[str], bytes]) -> bytes:
    """``build(pad)`` with ASCII padding chosen so that the storage limit falls right after the first
    byte of a multi-byte character: the clip the record keeps is then not valid UTF-8 as it stands."""
    unpadded = build("")
    for shift in range(64):
        if unpadded[STORE_LIMIT - 1 - shift] >= 0xC0:  # the lead byte of a multi-byte character
            body = build("#" * shift)  # moves it to STORE_LIMIT - 1
            assert body[STORE_LIMIT - 1] >= 0xC0
            return body
    raise AssertionError("no multi-byte character near the storage limit")


def big_request() -> bytes:
    return _split_at_limit(lambda pad: _compact({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You answer briefly." + pad},
        {"role": "user", "content": _text_of(BODY_SIZE)},
    ]}))


def big_response() -> bytes:
    message = {"role": "assistant", "content": _text_of(BODY_SIZE)}
    return _split_at_limit(lambda pad: _compact({
        "id": "chatcmpl-huge" + pad, "object": "chat.completion", "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 12_500_000, "total_tokens": 12_500_012},
    }))


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    # Its own mock: the session one would keep a 50 MB request body until the next test resets it.
    with MockUpstream() as m:
        yield m


@pytest.fixture(scope="module")
def gateway(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with Gateway(mock.url, workdir=tmp_path_factory.mktemp("huge")) as gw:
        yield gw


def post(gateway: Gateway, body: bytes, tag: str, timeout: float = 120) -> httpx.Response:
    with httpx.Client(timeout=timeout) as client:
        return client.post(
            gateway.url + CHAT,
            content=body,
            headers={"content-type": "application/json", "x-test-id": tag, "authorization": "Bearer sk-huge"},
        )


def assert_still_serving(gateway: Gateway, mock: MockUpstream) -> None:
    """The process is alive and a small request right after goes through and is recorded."""
    assert gateway.proc is not None and gateway.proc.poll() is None, gateway.log()[-2000:]
    mock.enqueue(OK)
    tag = new_tag()
    resp = post(gateway, b'{"model": "gpt-4o", "messages": []}', tag, timeout=20)
    assert resp.status_code == 200 and resp.json()["id"] == "small"
    assert gateway.row_for(tag, timeout=20)["status"] == 200


def assert_clipped(stored: str | None, body: bytes) -> None:
    """The stored body is the body's first STORE_LIMIT bytes as text (minus a split last character)."""
    assert stored is not None
    assert not stored.startswith("base64:"), "a UTF-8 body clipped mid-character must stay text"
    kept = stored.encode()
    assert len(kept) <= STORE_LIMIT
    assert len(kept) > STORE_LIMIT - 4, "no more than one partial character may be dropped"
    assert body.startswith(kept)


@reliability(
    "bad client input",
    "enormous request body (50 MB, non-ASCII JSON)",
    "forwarded byte for byte; the provider's answer",
    "row; stored body clipped to body_limit, still text; gateway keeps serving",
)
def test_50mb_request_reaches_upstream_unchanged_and_is_recorded_clipped(gateway: Gateway, mock: MockUpstream) -> None:
    body, tag = big_request(), new_tag()
    assert len(body) > 12 * STORE_LIMIT
    mock.reset()
    mock.enqueue(OK)
    started = time.monotonic()
    resp = post(gateway, body, tag)
    assert resp.status_code == 200 and resp.json()["id"] == "small"
    received = mock.requests[-1].body
    mock.reset()  # drop the mock's 50 MB copy now
    assert received == body, "the upstream must get the request byte for byte"
    del received

    row = gateway.row_for(tag, timeout=60)
    assert row["status"] == 200 and row["model"] == "gpt-4o" and row["complete"]
    assert row["parse_error"] is None
    assert_clipped(row["request_body"], body)
    assert gateway.peak_rss() < GATEWAY_PEAK_RSS, f"gateway peaked at {gateway.peak_rss() >> 20} MiB"
    assert_still_serving(gateway, mock)
    print(f"50 MB request: {time.monotonic() - started:.1f}s, gateway peak RSS {gateway.peak_rss() >> 20} MiB")


@reliability("upstream faults", "enormous JSON answer (50 MB)", "bytes unchanged",
             "row with usage; stored body clipped to body_limit, still text; gateway keeps serving")
def test_50mb_response_reaches_the_client_unchanged_and_is_recorded_clipped(
    gateway: Gateway, mock: MockUpstream
) -> None:
    body, tag = big_response(), new_tag()
    assert len(body) > 12 * STORE_LIMIT
    mock.reset()
    mock.enqueue(Reply(status=200, headers={"content-type": "application/json"}, body=body))
    started = time.monotonic()
    resp = post(gateway, b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "long answer"}]}', tag)
    assert resp.status_code == 200
    assert resp.content == body, "the client must get the answer byte for byte"
    mock.reset()  # the Reply holds 50 MB

    row = gateway.row_for(tag, timeout=60)
    assert row["status"] == 200 and row["complete"] and row["parse_error"] is None
    # Usage read from the end of the 50 MB document: the meter parsed all of it.
    assert (row["input_tokens"], row["output_tokens"]) == (12, 12_500_000)
    assert row["model"] == "gpt-4o-2024-08-06"
    assert_clipped(row["response_body"], body)
    assert gateway.peak_rss() < GATEWAY_PEAK_RSS, f"gateway peaked at {gateway.peak_rss() >> 20} MiB"
    assert_still_serving(gateway, mock)
    print(f"50 MB response: {time.monotonic() - started:.1f}s, gateway peak RSS {gateway.peak_rss() >> 20} MiB")
