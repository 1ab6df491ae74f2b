"""Token limits are charged with the real usage once a stream ends; adaptive mode obeys the
provider's own rate-limit headers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from addon.credentials import fingerprint
from tests.support import corpus
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream, Reply
from tests.support.waiting import until

STREAM = "openai-chat-stream-1"  # 1144 input + 2 output tokens
STREAM_TOTAL = corpus.load(STREAM)["expect"]["input_tokens"] + corpus.load(STREAM)["expect"]["output_tokens"]
TPM = STREAM_TOTAL + 10  # room for one such stream, not for the estimate (~20) of one more request


@pytest.fixture(scope="module")
def gw(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "limits": [{"name": "openai-tpm", "tokens_per_minute": TPM, "provider": "openai", "per": "credential"}],
        "limits_settings": {"adaptive": True, "adaptive_max_wait": 5},
    }
    with Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("limits-tokens")) as g:
        yield g


def window_used(gw: Gateway, api_key: str) -> int:
    report = httpx.get(gw.url + "/_corral/limits").json()
    limit = next(lim for lim in report["limits"] if lim["name"] == "openai-tpm")
    bucket = next(b for b in limit["buckets"] if b["key"] == f"credential={fingerprint(api_key)}")
    return bucket["windows"][0]["used"]


def test_stream_usage_is_charged_after_it_ends(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    api_key = "sk-tokens-" + uuid.uuid4().hex
    client = openai.OpenAI(base_url=gw.base("openai") + "/v1", api_key=api_key, max_retries=0)
    headers = {"x-mock-exchange": STREAM, "x-test-id": tag}
    messages = [{"role": "user", "content": "hi"}]
    stream = client.chat.completions.create(model="gpt-4.1", messages=messages, stream=True, extra_headers=headers)
    assert list(stream)  # admitted on its small estimate (body bytes / 4), streamed through
    until(lambda: window_used(gw, api_key) >= STREAM_TOTAL - 15)  # corrected once the stream ended
    assert STREAM_TOTAL - 15 <= window_used(gw, api_key) <= STREAM_TOTAL  # the real usage, not the estimate
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4.1", messages=messages, stream=True, extra_headers=headers)
    assert "openai-tpm" in info.value.message and f"{TPM} tokens per minute" in info.value.message
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert sum(1 for r in list(mock.requests) if r.headers.get("x-test-id") == tag) == 1
    row = gw.wait_rows(lambda r: tag in (r.get("request_headers") or "") and r["status"] == 429)[0]
    assert row["error"].startswith("rate limited by corral")


def test_request_bigger_than_the_window_is_rejected_at_once(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    big = "x" * (TPM * 4 + 400)  # estimate (bytes / 4) alone exceeds the window
    resp = httpx.post(gw.base("openai") + "/v1/chat/completions",
                      json={"model": "gpt-4.1", "messages": [{"role": "user", "content": big}]},
                      headers={"authorization": "Bearer sk-big-" + uuid.uuid4().hex, "x-test-id": tag}, timeout=10)
    assert resp.status_code == 429
    assert "needs more than the window allows" in resp.json()["error"]["message"]
    assert sum(1 for r in list(mock.requests) if r.headers.get("x-test-id") == tag) == 0


def test_adaptive_mode_holds_until_the_providers_reset(gw: Gateway, mock: MockUpstream, tag: str) -> None:
    exhausted = Reply.from_exchange("openai-chat-json-1")
    exhausted.headers.update({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"})
    held_key, other_key = "sk-adaptive-" + uuid.uuid4().hex, "sk-adaptive-" + uuid.uuid4().hex

    def send(api_key: str, name: str, scripted: bool = False) -> httpx.Response:
        headers = {"authorization": f"Bearer {api_key}", "x-test-id": f"{tag}-{name}"}
        if not scripted:
            headers["x-mock-exchange"] = "openai-chat-json-1"
        return httpx.post(gw.base("openai") + "/v1/chat/completions", json={"model": "gpt-4.1", "messages": []},
                          headers=headers, timeout=20)

    # (How long a hold lasts, exactly: tests/unit/limits/test_limiter.py on a fake clock.)
    mock.reset()
    mock.enqueue(exhausted)
    assert send(held_key, "first", scripted=True).status_code == 200  # the provider: no requests left for 1.5 s
    held = send(held_key, "held")  # at once: well inside the 1.5 s
    other = send(other_key, "other")  # another credential is not held
    assert other.status_code == 200 and held.status_code == 200
    assert "x-corral-ratelimit-wait-ms" not in other.headers and gw.row_for(f"{tag}-other")["wait_ms"] is None
    waited = gw.row_for(f"{tag}-held")["wait_ms"]
    assert waited and 0 < waited <= 1600 and int(held.headers["x-corral-ratelimit-wait-ms"]) == round(waited)
