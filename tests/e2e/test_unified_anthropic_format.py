"""The unified endpoint's ``response_format`` for Anthropic models: a JSON schema becomes Anthropic's
structured output (``output_config.format``, checked against the anthropic SDK's request params); a
schema-less JSON object has no Anthropic equivalent and is refused naming the parameter."""

from __future__ import annotations

import json

import openai
import pytest

from tests.e2e.test_unified import KEY, client, native_request
from tests.support import corpus
from tests.support.gateway import Gateway


def test_json_schema_sent_as_structured_output(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "anthropic-messages-json-3"
    schema = {"type": "object", "properties": {"animal": {"type": "string"}}, "required": ["animal"],
              "additionalProperties": False}
    result = client(gateway, name, tag).chat.completions.create(
        model="anthropic/claude-sonnet-4-5", messages=[{"role": "user", "content": "The quick brown fox"}],
        response_format={"type": "json_schema", "json_schema": {"name": "animal", "schema": schema, "strict": True}})
    recorded = json.loads(corpus.load(name)["response"]["body_text"])
    assert result.choices[0].message.content == recorded["content"][0]["text"]  # the JSON comes back as text
    _path, body, _headers = native_request(fresh_mock)
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def test_json_object_is_refused_naming_it(gateway: Gateway, fresh_mock, tag: str) -> None:
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, default_headers={"x-test-id": tag})
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="anthropic/claude-sonnet-4-5", response_format={"type": "json_object"},
                                  messages=[{"role": "user", "content": "JSON please"}])
    assert err.value.body["param"] == "response_format"  # type: ignore[index]
    assert "json_schema" in err.value.message
    assert fresh_mock.request_count == 0
