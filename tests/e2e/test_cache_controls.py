"""Response cache: per-request headers, settings that turn it on, `corral cache`, and paced replay."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support import corpus
from tests.support.gateway import CORRAL, REPO_ROOT, Gateway
from tests.support.mock_upstream import MockUpstream

KEY = "sk-test-cache-controls-01"
JSON_NAME = "openai-chat-json-1"
STREAM_NAME = "openai-chat-stream-2"


def body_for(tag: str, name: str = JSON_NAME, **changes) -> bytes:
    return json.dumps({**corpus.load(name)["request"]["body"], "user": tag, **changes}).encode()


def post(
    gw: Gateway, body: bytes, headers: dict[str, str] | None = None, name: str = JSON_NAME, prefix: str = "openai"
) -> httpx.Response:
    hdrs = {"content-type": "application/json", "authorization": f"Bearer {KEY}", "x-mock-exchange": name,
            **(headers or {})}
    with httpx.Client(timeout=20) as client:
        return client.post(gw.base(prefix) + "/v1/chat/completions", content=body, headers=hdrs)


@pytest.fixture(scope="module")
def cgw(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with Gateway(
        mock.url, config={"cache": {"enabled": True}}, workdir=tmp_path_factory.mktemp("cache-controls")
    ) as gw:
        yield gw


# --- per-request headers on the default gateway (cache off in its settings) ------------------

def test_cache_is_off_by_default_and_says_so(gateway: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)
    assert post(gateway, body).headers["x-corral-cache"] == "off"
    assert post(gateway, body).headers["x-corral-cache"] == "off"
    assert fresh_mock.request_count == 2


def test_header_use_turns_the_cache_on_for_one_request(gateway: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)
    first = post(gateway, body, {"x-corral-cache": "use"})
    second = post(gateway, body, {"x-corral-cache": "use"})
    assert (first.headers["x-corral-cache"], second.headers["x-corral-cache"]) == ("miss", "hit")
    assert second.content == first.content
    assert fresh_mock.request_count == 1
    assert post(gateway, body).headers["x-corral-cache"] == "off"  # without the header: upstream again
    assert fresh_mock.request_count == 2
    assert "x-corral-cache" not in fresh_mock.requests[0].headers  # Corral's controls stay with Corral
    row = gateway.wait_rows(lambda r: tag in (r.get("request_body") or "") and r["cache"] == "hit")[0]
    assert row["cost_usd"] == 0 and row["saved_cost_usd"] > 0


# --- headers on a gateway with the cache on -------------------------------------------------

def test_skip_bypasses_read_and_write(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)
    assert post(cgw, body, {"x-corral-cache": "skip"}).headers["x-corral-cache"] == "skip"
    assert post(cgw, body).headers["x-corral-cache"] == "miss"  # skip wrote nothing
    assert post(cgw, body, {"x-corral-cache": "skip"}).headers["x-corral-cache"] == "skip"  # and read nothing
    assert fresh_mock.request_count == 3
    assert post(cgw, body).headers["x-corral-cache"] == "hit"
    assert fresh_mock.request_count == 3


def test_cache_control_no_store_is_a_skip(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)
    assert post(cgw, body, {"cache-control": "no-store"}).headers["x-corral-cache"] == "skip"
    assert post(cgw, body).headers["x-corral-cache"] == "miss"
    assert fresh_mock.request_count == 2


def test_refresh_goes_upstream_and_replaces_the_entry(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)
    first = post(cgw, body)
    refreshed = post(cgw, body, {"x-corral-cache": "refresh"}, name="openai-chat-json-2")
    assert refreshed.headers["x-corral-cache"] == "refresh"
    assert fresh_mock.request_count == 2
    after = post(cgw, body)
    assert after.headers["x-corral-cache"] == "hit" and fresh_mock.request_count == 2
    assert after.content == refreshed.content != first.content


def test_ttl_header_sets_the_lifetime(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)
    post(cgw, body, {"x-corral-cache-ttl": "1"})
    assert post(cgw, body).headers["x-corral-cache"] == "hit"
    time.sleep(1.3)
    assert post(cgw, body).headers["x-corral-cache"] == "miss"
    assert fresh_mock.request_count == 2


def test_namespace_header_separates_entries(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)
    post(cgw, body, {"x-corral-cache-namespace": "a"})
    assert post(cgw, body, {"x-corral-cache-namespace": "b"}).headers["x-corral-cache"] == "miss"
    assert post(cgw, body).headers["x-corral-cache"] == "miss"
    assert post(cgw, body, {"x-corral-cache-namespace": "a"}).headers["x-corral-cache"] == "hit"
    assert fresh_mock.request_count == 3
    assert not any(k.startswith("x-corral") for r in fresh_mock.requests for k in r.headers)


def test_secret_query_parameter_is_not_part_of_the_key_but_the_credential_is(
    cgw: Gateway, fresh_mock, tag: str
) -> None:
    name = "gemini-generatecontent-json-1"
    path = "/v1beta/models/gemini-2.0-flash:generateContent"
    content = json.dumps({"contents": [{"parts": [{"text": tag}]}]}).encode()

    def call(key: str) -> httpx.Response:
        with httpx.Client(timeout=20) as client:
            return client.post(cgw.base("gemini") + path + f"?key={key}", content=content,
                               headers={"content-type": "application/json", "x-mock-exchange": name})

    assert call("AIza-one").headers["x-corral-cache"] == "miss"
    assert call("AIza-one").headers["x-corral-cache"] == "hit"
    assert call("AIza-two").headers["x-corral-cache"] == "miss"  # another key: never the same entry
    assert fresh_mock.request_count == 2


# --- settings -------------------------------------------------------------------------------

def test_models_and_shared_providers_settings(mock: MockUpstream, fresh_mock, tag: str, tmp_path) -> None:
    config = {"cache": {"models": ["gpt-4o*"], "shared_providers": ["openai"]}}
    with Gateway(mock.url, config=config, workdir=tmp_path) as gw:
        body = body_for(tag)  # model gpt-4o-mini: matches
        assert post(gw, body).headers["x-corral-cache"] == "miss"
        other = post(gw, body, {"authorization": "Bearer sk-someone-else"})
        assert other.headers["x-corral-cache"] == "hit"  # shared namespace: any key
        assert post(gw, body_for(tag, model="o3-mini")).headers["x-corral-cache"] == "off"
        assert fresh_mock.request_count == 2


def test_cli_stats_and_clear(cgw: Gateway, fresh_mock, tag: str) -> None:
    body = body_for(tag)
    post(cgw, body)
    post(cgw, body)

    def cli(*args: str) -> str:
        out = subprocess.run(
            [*CORRAL, "cache", *args, "--db", cgw.db], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    stats = json.loads(cli("stats", "--json"))
    assert stats["providers"]["openai"]["entries"] >= 1
    assert "openai" in cli("stats")
    assert "removed" in cli("clear", "--provider", "openai")
    assert json.loads(cli("stats", "--json"))["providers"].get("openai") is None
    deadline = time.monotonic() + 10  # the running gateway notices within its housekeeping interval
    while post(cgw, body).headers["x-corral-cache"] == "hit":
        assert time.monotonic() < deadline, "the gateway kept serving a cleared entry"
        time.sleep(0.5)


# --- paced replay ---------------------------------------------------------------------------

def _arrival_gaps(gw: Gateway, body: bytes) -> tuple[list[float], bytes]:
    """Client-side arrival times of the stream's chunks, relative to the first one."""
    client = openai.OpenAI(base_url=gw.base("openai") + "/v1", api_key=KEY, max_retries=0, timeout=20)
    times, chunks = [], []
    with httpx.Client(timeout=20) as raw:
        with raw.stream("POST", gw.base("openai") + "/v1/chat/completions", content=body, headers={
                "content-type": "application/json", "authorization": f"Bearer {KEY}",
                "x-mock-exchange": STREAM_NAME}) as resp:
            for chunk in resp.iter_raw():
                times.append(time.monotonic())
                chunks.append(chunk)
    del client
    return [b - a for a, b in itertools.pairwise(times)], b"".join(chunks)


def test_paced_replay_keeps_the_original_gaps(mock: MockUpstream, fresh_mock, tag: str, tmp_path) -> None:
    fresh_mock.chunk_delay = 0.05
    config = {"cache": {"enabled": True, "replay_pace": "original"}}
    with Gateway(mock.url, config=config, workdir=tmp_path) as gw:
        body = body_for(tag, STREAM_NAME)
        recorded, first = _arrival_gaps(gw, body)
        replayed, second = _arrival_gaps(gw, body)
        assert fresh_mock.request_count == 1, "the replay was a hit"
        assert second == first
        assert sum(recorded) > 0.4  # 14 gaps of 50 ms upstream
        # Same pace: total and per-gap, within a tolerance that loopback jitter cannot break.
        assert abs(sum(replayed) - sum(recorded)) < 0.15, (recorded, replayed)
        assert len(replayed) >= len(recorded) - 2
        big = [g for g in replayed if g > 0.03]
        assert len(big) >= len([g for g in recorded if g > 0.03]) - 2, (recorded, replayed)
        # And the SDK's stream iterator works on the paced replay.
        client = openai.OpenAI(base_url=gw.base("openai") + "/v1", api_key=KEY, max_retries=0, timeout=20)
        events = list(
            client.chat.completions.create(**json.loads(body), extra_headers={"x-mock-exchange": STREAM_NAME})
        )
        assert events and fresh_mock.request_count == 1


def test_fast_replay_does_not_wait(cgw: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.chunk_delay = 0.05
    body = body_for(tag, STREAM_NAME)
    recorded, first = _arrival_gaps(cgw, body)
    replayed, second = _arrival_gaps(cgw, body)
    assert second == first and fresh_mock.request_count == 1
    assert sum(replayed) < sum(recorded) / 2, (recorded, replayed)


# --- explicit proxy mode ----------------------------------------------------------------------

@pytest.mark.parametrize("pace", ["fast", "original"])
def test_explicit_mode_hits_with_the_sdk(mock: MockUpstream, fresh_mock, tag: str, tmp_path, pace: str) -> None:
    from tests.e2e.test_explicit_mode import OPENAI_SCRIPT, run_sdk, sdk_env

    body = json.loads(body_for(tag, STREAM_NAME))
    fresh_mock.default = STREAM_NAME
    with Gateway(mock.url, config={"cache": {"enabled": True, "replay_pace": pace}}, workdir=tmp_path) as gw:
        env = sdk_env(gw, OPENAI_API_KEY="sk-test-explicit-cache")
        first = run_sdk(OPENAI_SCRIPT, env, body, tag)
        second = run_sdk(OPENAI_SCRIPT, env, body, tag)
        assert second == first and first["chunks"] >= 2
        rows = gw.wait_rows(lambda r: tag in (r.get("request_headers") or ""), 2)
        assert fresh_mock.request_count == 1, [(r["cache"], r["error"], r["complete"]) for r in rows]
        assert [(r["mode"], r["cache"]) for r in rows] == [("explicit", "miss"), ("explicit", "hit")]
