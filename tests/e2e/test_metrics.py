"""/metrics counts upstream failures: a provider that refuses connections is an `unreachable` error."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.support.gateway import Gateway, free_port, new_tag


def test_unreachable_upstream_is_counted(tmp_path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    port = free_port()
    with Gateway(dead, workdir=tmp_path, config={"viewer": {"listen": f"127.0.0.1:{port}"}}) as gw:
        client = openai.OpenAI(base_url=gw.base("openai/v1"), api_key="sk-x", max_retries=0,
                               default_headers={"x-test-id": new_tag()})
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        deadline = time.monotonic() + 10
        text = ""
        while time.monotonic() < deadline:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            if "corral_upstream_errors_total{" in text:
                break
            time.sleep(0.1)
        assert 'corral_upstream_errors_total{kind="unreachable",provider="openai"} 1.0' in text
        assert 'status_class="5xx"' in text
        assert 'corral_duration_seconds_count{provider="openai"} 1.0' in text
