"""/metrics counts upstream failures: a provider that refuses connections is an `unreachable` error."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.gateway import Gateway
from tests.support.waiting import until


def test_unreachable_upstream_is_counted(gateway: Gateway, tag: str) -> None:
    client = openai.OpenAI(base_url=gateway.base("deadend/v1"), api_key="sk-x", max_retries=0,
                           default_headers={"x-test-id": tag})
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    gateway.row_for(tag)  # recorded: counted too (metrics count at the same hooks)
    def counted() -> str:
        text = httpx.get(gateway.viewer_url + "metrics").text
        return text if 'corral_upstream_errors_total{kind="unreachable",provider="deadend"}' in text else ""

    text = until(counted)
    assert 'corral_upstream_errors_total{kind="unreachable",provider="deadend"} 1.0' in text
    assert 'status_class="5xx"' in text
    assert 'corral_duration_seconds_count{provider="deadend"} 1.0' in text
