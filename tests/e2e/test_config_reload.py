"""corral.toml changed under a running gateway: applied without a restart, open streams untouched,
an invalid file refused as a whole."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.cli import corral
from tests.support.gateway import Gateway, write_config
from tests.support.mock_upstream import MockUpstream, Reply
from tests.support.otlp_collector import OTLPCollector, split
from tests.support.reliability import reliability
from tests.support.waiting import until

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "reload?"}]}


def rewrite(gw: Gateway, upstream: str, extra: dict[str, Any]) -> None:
    """The new file, swapped in whole as editors and config tools do."""
    tmp = gw.config_path.with_suffix(".new")
    write_config(tmp, upstream, extra)
    os.replace(tmp, gw.config_path)


def log_count(gw: Gateway, text: str) -> int:
    return gw.log().count(text)


@reliability("load and shutdown", "corral.toml changed while a stream is open", "stream completes unchanged",
             "row complete; new flows use the new settings; an invalid file changes nothing")
def test_reload_applies_new_settings_and_keeps_the_open_stream(
    mock: MockUpstream, fresh_mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory, tag: str
) -> None:
    base = {"config": {"reload_interval": 0.05}, "viewer": {"listen": ""}}
    gw = Gateway(mock.url, config={**base, "cache": {"enabled": False}}, workdir=tmp_path_factory.mktemp("reload"))
    with gw:
        hold = threading.Event()
        fresh_mock.enqueue(Reply.from_exchange("openai-chat-stream-1", hold=hold))
        sdk = openai.OpenAI(base_url=gw.base("openai/v1"), api_key="sk-x", max_retries=0,
                            default_headers={"x-test-id": tag})
        stream = sdk.chat.completions.create(model="gpt-4o-mini", stream=True,
                                             messages=[{"role": "user", "content": "hi"}])
        chunks = iter(stream)
        first = next(chunks)  # the stream is open, the rest held back by the mock

        rewrite(gw, mock.url, {**base, "cache": {"enabled": True}})
        until(lambda: log_count(gw, "configuration reloaded") == 1, message="no reload in the log:\n" + gw.log())
        assert "[cache] enabled" in gw.log()

        hold.set()
        rest = list(chunks)
        assert first.id and rest and rest[-1].choices[0].finish_reason is not None
        row = gw.row_for(tag)
        assert row["complete"] and row["error"] is None and row["status"] == 200

        # New flows: the cache is on now.
        fresh_mock.enqueue("openai-chat-json-2")
        with httpx.Client(base_url=gw.base("openai/v1"), headers={"authorization": "Bearer sk-x"}) as http:
            assert http.post("/chat/completions", json=BODY).headers["x-corral-cache"] == "miss"
            assert http.post("/chat/completions", json=BODY).headers["x-corral-cache"] == "hit"

            # Refused as a whole: the cache switch-off next to a value the telemetry addon refuses.
            rewrite(gw, mock.url, {**base, "cache": {"enabled": False}, "telemetry": {"sample_ratio": 5}})
            message = "reload refused, the running configuration stays"
            until(lambda: log_count(gw, message) == 1, message="no refusal in the log:\n" + gw.log())
            [line] = [ln for ln in gw.log().splitlines() if message in ln]
            assert "[telemetry] sample_ratio: expected a number from 0 to 1" in line
            assert http.post("/chat/completions", json=BODY).headers["x-corral-cache"] == "hit"  # still on

            # A misspelt key: refused with the message a start gives.
            rewrite(gw, mock.url, {**base, "cache": {"enabled": False, "tll": 5}})
            until(lambda: log_count(gw, message) == 2, message="no refusal in the log:\n" + gw.log())
            assert "unknown setting [cache] tll (did you mean [cache] ttl?)" in gw.log()
            assert http.post("/chat/completions", json=BODY).headers["x-corral-cache"] == "hit"
        assert log_count(gw, "configuration reloaded") == 1
    assert fresh_mock.request_count == 2  # the stream and the one miss: every hit stayed in the gateway


def test_sighup_reloads_and_the_command_line_still_wins(
    mock: MockUpstream, fresh_mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = {"config": {"reload_interval": 0}, "viewer": {"listen": ""}}  # no polling: only the signal reloads
    gw = Gateway(mock.url, config={**base, "cache": {"enabled": True, "ttl": 60}},
                 sets=["corral_cache_enabled=true"], workdir=tmp_path_factory.mktemp("sighup"))
    with gw:
        rewrite(gw, mock.url, {**base, "cache": {"enabled": False, "ttl": 120}})
        assert gw.proc is not None
        gw.proc.send_signal(__import__("signal").SIGHUP)
        until(lambda: log_count(gw, "configuration reloaded") == 1, message="no reload in the log:\n" + gw.log())
        line = next(ln for ln in gw.log().splitlines() if "configuration reloaded" in ln)
        assert line.endswith(": [cache] ttl")  # --set corral_cache_enabled wins over the file's change
        fresh_mock.enqueue("openai-chat-json-2")
        with httpx.Client(base_url=gw.base("openai/v1"), headers={"authorization": "Bearer sk-x"}) as http:
            assert http.post("/chat/completions", json=BODY).headers["x-corral-cache"] == "miss"
            assert http.post("/chat/completions", json=BODY).headers["x-corral-cache"] == "hit"
    assert Path(gw.config_path).exists()


def test_reload_during_32_open_streams_then_a_tighter_limit_applies(
    mock: MockUpstream, fresh_mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory, tag: str
) -> None:
    base = {"config": {"reload_interval": 0.05}, "viewer": {"listen": ""}}
    gw = Gateway(mock.url, config=base, workdir=tmp_path_factory.mktemp("reload32"))
    with gw:
        hold = threading.Event()
        fresh_mock.enqueue(*[Reply.from_exchange("openai-chat-stream-1", hold=hold) for _ in range(32)])
        opened = threading.Barrier(33)
        results: list[str | None] = [None] * 32

        def stream(i: int) -> None:
            sdk = openai.OpenAI(base_url=gw.base("openai/v1"), api_key=f"sk-stream-{i}", max_retries=0,
                                default_headers={"x-test-id": tag})
            chunks = iter(sdk.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                      messages=[{"role": "user", "content": f"s{i}"}]))
            next(chunks)
            opened.wait(timeout=30)
            rest = list(chunks)
            results[i] = rest[-1].choices[0].finish_reason if rest and rest[-1].choices else "no end"

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        opened.wait(timeout=30)  # 32 streams open, each held after its first chunk
        limit = {"name": "tight", "requests_per_minute": 1, "provider": "openai", "per": "credential"}
        rewrite(gw, mock.url, {**base, "limits": [limit]})
        until(lambda: log_count(gw, "configuration reloaded") == 1, message="no reload in the log:\n" + gw.log())
        hold.set()
        for t in threads:
            t.join(timeout=30)
        assert results == ["stop"] * 32  # every stream reached its end after the reload
        rows = gw.wait_rows(lambda r: tag in (r.get("request_headers") or ""), count=32)
        assert len(rows) == 32 and all(r["complete"] and r["status"] == 200 for r in rows)  # once each

        # The next requests: the new limit counts them (the streams began before it existed).
        fresh_mock.enqueue("openai-chat-json-2")
        with httpx.Client(base_url=gw.base("openai/v1"), headers={"authorization": "Bearer sk-new"}) as http:
            assert http.post("/chat/completions", json=BODY).status_code == 200
            refused = http.post("/chat/completions", json={**BODY, "messages": [{"role": "user", "content": "2"}]})
            assert refused.status_code == 429 and refused.headers["x-corral-ratelimit-name"] == "tight"


def test_corral_reload_command_answers_with_the_outcome(
    mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = {"config": {"reload_interval": 0}, "viewer": {"listen": ""}}  # only the command reloads
    gw = Gateway(mock.url, config={**base, "cache": {"ttl": 60}}, workdir=tmp_path_factory.mktemp("reload-cli"))
    with gw:
        args = ("reload", "--config", str(gw.config_path), "--listen", f"127.0.0.1:{gw.port}")
        rewrite(gw, mock.url, {**base, "cache": {"ttl": 120}})
        out = corral(*args)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.strip() == f"corral: configuration reloaded from {gw.config_path}: [cache] ttl"
        rewrite(gw, mock.url, {**base, "cache": {"ttl": "a day"}})
        out = corral(*args)
        assert out.returncode == 1
        assert out.stdout.strip() == (f"corral: reload refused, the running configuration stays: {gw.config_path}: "
                                      '[cache] ttl: expected an integer, got "a day" (a string)')
        assert httpx.get(f"{gw.url}/_corral/reload").status_code == 405  # a GET changes nothing
        # A web page that rebound a name to 127.0.0.1 sends its own Host: refused before any reload.
        assert httpx.post(f"{gw.url}/_corral/reload", headers={"Host": "evil.example"}).status_code == 403
        assert log_count(gw, "reload refused") == 1 and log_count(gw, "configuration reloaded") == 1


def test_telemetry_switched_on_by_a_reload(
    mock: MockUpstream, fresh_mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = {"config": {"reload_interval": 0.05}, "viewer": {"listen": ""}}
    with OTLPCollector() as collector:
        gw = Gateway(mock.url, config=base, workdir=tmp_path_factory.mktemp("reload-otel"))
        gw.start(env={**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "50"})
        try:
            rewrite(gw, mock.url, {**base, "telemetry": {"otlp_endpoint": collector.url}})
            until(lambda: log_count(gw, "configuration reloaded") == 1, message="no reload in the log:\n" + gw.log())
            fresh_mock.enqueue("openai-chat-json-2")
            trace_id = "0af7651916cd43dd8448eb211c80319c"
            sdk = openai.OpenAI(base_url=gw.base("openai/v1"), api_key="sk-x", max_retries=0,
                                default_headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"})
            sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "otel?"}])
            span, _ = split(collector.trace(trace_id))
            assert span["attributes"]["gen_ai.request.model"] == "gpt-4o-mini"
        finally:
            gw.stop()


def test_an_unchanged_limit_keeps_its_window_across_a_reload(
    mock: MockUpstream, fresh_mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = {"config": {"reload_interval": 0.05}, "viewer": {"listen": ""}}
    kept = {"name": "kept", "requests_per_minute": 1, "provider": "openai", "per": "credential"}
    added = {"name": "added", "requests_per_minute": 100, "provider": "anthropic"}
    gw = Gateway(mock.url, config={**base, "limits": [kept]}, workdir=tmp_path_factory.mktemp("reload-window"))
    with gw:
        fresh_mock.enqueue("openai-chat-json-2")
        with httpx.Client(base_url=gw.base("openai/v1"), headers={"authorization": "Bearer sk-window"}) as http:
            assert http.post("/chat/completions", json=BODY).status_code == 200  # the window is full now
            rewrite(gw, mock.url, {**base, "limits": [kept, added]})
            until(lambda: log_count(gw, "configuration reloaded") == 1, message="no reload in the log:\n" + gw.log())
            refused = http.post("/chat/completions", json={**BODY, "messages": [{"role": "user", "content": "2"}]})
            assert refused.status_code == 429 and refused.headers["x-corral-ratelimit-name"] == "kept"
