"""Model groups on the unified endpoint (``[models.<alias>]``): the real openai SDK asks for an alias, the
gateway tries the group's targets, each in its own wire family, and falls back across providers on 429,
5xx and connection errors, never on a 4xx the client caused. The mock answers with recorded real
exchanges (../shared/corpus); the record keeps every attempt and the answering provider's exchange."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pydantic
import pytest
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming

from tests.support import corpus
from tests.support.cli import corral
from tests.support.gateway import Gateway, refused_port
from tests.support.mock_upstream import MockUpstream, Reply
from tests.support.reliability import reliability

KEY = "sk-unified-groups-test-0123456789"
HAIKU, MINI = "anthropic/claude-haiku-4-5", "openai/gpt-4o-mini"
MODELS = {
    "models.fast": {"targets": [HAIKU, MINI]},  # strategy "fallback": in the listed order
    "models.mini-first": {"targets": [MINI, HAIKU]},
    "models.rr": {"targets": [MINI, "groq/llama3-8b-8192"], "strategy": "round-robin"},
    "models.heavy-groq": {"targets": [MINI, "groq/llama3-8b-8192"], "strategy": "weighted", "weights": [0, 1]},
    "models.refused-first": {"targets": ["deadend/any-model", MINI]},
    # Latencies are per target, whichever alias measured them: targets no other test uses.
    "models.quickest": {"targets": ["deepseek/deepseek-chat", "groq/llama-3.1-8b-instant"],
                        "strategy": "lowest-latency"},
    "models.gemini-second": {"targets": [HAIKU, "gemini/gemini-2.5-flash"]},
    "models.slow-first": {"targets": ["mistral/mistral-small-latest", MINI]},
}


def overloaded(status: int) -> Reply:
    body = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).encode()
    return Reply(status, {"content-type": "application/json"}, body)


@pytest.fixture(scope="module")
def groups_gateway(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        **MODELS,
        "retries": {"attempts": 1},  # one attempt per target: the record shows exactly the fallback
        # A group's attempts follow its first target's policy: mistral's gives up on a silent upstream soon.
        "retries.providers.mistral": {"ttfb_timeout": 1},
        "providers.deadend": {"custom": True, "upstream": f"http://127.0.0.1:{refused_port()}"},  # nothing listens
    }
    with Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("groups")) as gw:
        yield gw


def client(gateway: Gateway, tag: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=20,
                         default_headers={"x-test-id": tag})


def ask(gateway: Gateway, tag: str, model: str, **extra):
    return client(gateway, tag).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Can the country of Crumpet have dragons?"}], **extra)


@reliability(
    "upstream faults",
    "a model group's first target (Anthropic) answers 529 / 503",
    "the answer of the next target (OpenAI), in OpenAI's shape; x-corral-retries: 1",
    "row: the answering provider's exchange, usage and cost; attempts lists both",
)
@pytest.mark.parametrize("status", [529, 503])
def test_overloaded_first_target_is_answered_by_the_next(groups_gateway: Gateway, fresh_mock, tag: str,
                                                         status: int) -> None:
    name = "openai-chat-json-2"
    fresh_mock.enqueue(overloaded(status), name)
    raw = client(groups_gateway, tag).chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "Can the country of Crumpet have dragons?"}])
    result = raw.parse()
    assert result.choices[0].message.content == "YES"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (146, 3)  # type: ignore[union-attr]
    assert raw.headers["x-corral-retries"] == "1"

    to_anthropic, to_openai = fresh_mock.requests
    assert to_anthropic.path == "/v1/messages" and to_anthropic.headers["x-api-key"] == KEY
    first = json.loads(to_anthropic.body)
    pydantic.TypeAdapter(MessageCreateParamsNonStreaming).validate_python(first, strict=True)
    assert first["model"] == "claude-haiku-4-5"
    assert to_openai.path == "/v1/chat/completions"
    assert to_openai.headers["authorization"] == f"Bearer {KEY}" and "x-api-key" not in to_openai.headers
    assert json.loads(to_openai.body)["model"] == "gpt-4o-mini"  # the OpenAI request, model rewritten

    row = groups_gateway.row_for(tag)
    assert (row["provider"], row["model"], row["path"]) == ("openai", "gpt-4o-mini-2024-07-18", "/v1/chat/completions")
    assert (row["input_tokens"], row["output_tokens"], row["retries"]) == (146, 3, 1)
    attempts = json.loads(row["attempts"])
    assert [(a["target"], a["status"]) for a in attempts] == [(HAIKU, status), (MINI, 200)]
    assert json.loads(row["request_body"])["model"] == "gpt-4o-mini"  # the answering target's native request
    assert "answered by openai/gpt-4o-mini after anthropic/claude-haiku-4-5" in row["corral_changes"]
    assert (row["requested_model"], row["model_alias"]) == ("fast", "fast")

    # Usage and cost: those of the same exchange sent natively to OpenAI.
    recorded = corpus.load(name)["request"]["body"]
    openai.OpenAI(base_url=groups_gateway.url + "/openai/v1", api_key=KEY, max_retries=0).chat.completions.create(
        **recorded, extra_headers={"x-mock-exchange": name, "x-test-id": tag + "-native"})
    native = groups_gateway.row_for(tag + "-native")
    for column in ("model", "input_tokens", "output_tokens", "cost_usd"):
        assert row[column] == native[column], column
    assert row["cost_usd"] > 0


def test_the_answer_is_translated_with_the_family_that_answered(groups_gateway: Gateway, fresh_mock,
                                                                tag: str) -> None:
    """OpenAI first (passed through), Anthropic second (translated): the client gets the Anthropic answer
    in OpenAI's shape, the record Anthropic's usage and price."""
    name = "anthropic-messages-json-3"
    fresh_mock.enqueue(Reply.error(503), name)
    result = ask(groups_gateway, tag, "mini-first")
    assert result.object == "chat.completion" and result.choices[0].message.content
    expected = corpus.load(name)["expect"]
    assert result.usage.prompt_tokens == expected["input_tokens"]  # type: ignore[union-attr]
    to_openai, to_anthropic = fresh_mock.requests
    assert to_openai.path == "/v1/chat/completions" and to_anthropic.path == "/v1/messages"
    pydantic.TypeAdapter(MessageCreateParamsNonStreaming).validate_python(json.loads(to_anthropic.body), strict=True)
    row = groups_gateway.row_for(tag)
    assert (row["provider"], row["input_tokens"], row["output_tokens"]) == (
        "anthropic", expected["input_tokens"], expected["output_tokens"])
    assert row["cost_usd"] > 0
    native_tag = tag + "-native"
    anthropic.Anthropic(base_url=groups_gateway.url + "/anthropic", api_key=KEY, max_retries=0).messages.create(
        **corpus.load(name)["request"]["body"], extra_headers={"x-mock-exchange": name, "x-test-id": native_tag})
    assert row["cost_usd"] == groups_gateway.row_for(native_tag)["cost_usd"]


def test_a_third_family_answers_a_fallback(groups_gateway: Gateway, fresh_mock, tag: str) -> None:
    """Anthropic, then Gemini generateContent: the client gets Gemini's answer in OpenAI's shape."""
    name = "gemini-generatecontent-json-1"
    fresh_mock.enqueue(overloaded(529), name)
    result = ask(groups_gateway, tag, "gemini-second")
    assert result.choices[0].message.content and result.usage is not None
    assert fresh_mock.requests[1].path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert fresh_mock.requests[1].headers["x-goog-api-key"] == KEY
    expected = corpus.load(name)["expect"]
    row = groups_gateway.row_for(tag)
    assert (row["provider"], row["input_tokens"], row["output_tokens"]) == (
        "gemini", expected["input_tokens"], expected["output_tokens"])


def test_stream_falls_back_and_streams_the_next_targets_answer(groups_gateway: Gateway, fresh_mock,
                                                               tag: str) -> None:
    name = "openai-chat-stream-1"
    fresh_mock.enqueue(overloaded(529), name)
    chunks = list(ask(groups_gateway, tag, "fast", stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 1144
    to_openai = json.loads(fresh_mock.requests[1].body)
    assert to_openai["stream"] is True and to_openai["stream_options"] == {"include_usage": True}
    row = groups_gateway.row_for(tag)
    assert (row["provider"], row["stream"], row["complete"]) == ("openai", True, True)
    assert (row["input_tokens"], row["output_tokens"]) == (1144, 2)
    assert [a["status"] for a in json.loads(row["attempts"])] == [529, 200]


def test_streamed_fallback_usage_is_recorded_without_a_chunk_the_client_did_not_ask_for(
        groups_gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.enqueue(overloaded(503), "openai-chat-stream-1")
    chunks = list(ask(groups_gateway, tag, "fast", stream=True))
    assert chunks and all(c.usage is None for c in chunks)  # no usage chunk: the client did not ask
    assert json.loads(fresh_mock.requests[1].body)["stream_options"] == {"include_usage": True}
    row = groups_gateway.row_for(tag)
    assert (row["provider"], row["input_tokens"], row["output_tokens"]) == ("openai", 1144, 2)
    assert "include_usage added to the request to openai/gpt-4o-mini" in row["corral_changes"]


@reliability(
    "bad client input",
    "a model group's first target refuses the request with a 4xx (400 invalid request)",
    "that 400 in OpenAI's shape (openai.BadRequestError); the next target is not tried",
    "row: status 400, one attempt",
)
def test_client_error_is_not_fallen_back(groups_gateway: Gateway, fresh_mock, tag: str) -> None:
    body = json.dumps({"type": "error", "error": {"type": "invalid_request_error",
                                                  "message": "messages: at least one message is required"}})
    fresh_mock.enqueue(Reply(400, {"content-type": "application/json"}, body.encode()), "openai-chat-json-2")
    with pytest.raises(openai.BadRequestError) as err:
        ask(groups_gateway, tag, "fast")
    assert err.value.body["message"] == "messages: at least one message is required"  # type: ignore[index]
    assert fresh_mock.request_count == 1
    row = groups_gateway.row_for(tag)
    assert (row["provider"], row["status"], row["retries"]) == ("anthropic", 400, 0)


@reliability(
    "upstream faults",
    "a model group's first target refuses the connection",
    "the next target's answer",
    "row: attempts with the connection error, then the answer",
)
def test_connection_error_falls_back(groups_gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.enqueue("openai-chat-json-2")
    assert ask(groups_gateway, tag, "refused-first").choices[0].message.content == "YES"
    row = groups_gateway.row_for(tag)
    attempts = json.loads(row["attempts"])
    assert attempts[0]["status"] is None and attempts[0]["error"]
    assert (attempts[1]["status"], row["provider"]) == (200, "openai")


def test_timeout_falls_back(groups_gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.enqueue(Reply.from_exchange("mistral-chat-json-1", delay_before_headers=30), "openai-chat-json-2")
    assert ask(groups_gateway, tag, "slow-first").choices[0].message.content == "YES"
    attempts = json.loads(groups_gateway.row_for(tag)["attempts"])
    assert [(a["target"], a["status"]) for a in attempts] == [("mistral/mistral-small-latest", None), (MINI, 200)]
    assert "ttfb_timeout" in attempts[0]["error"]


def test_round_robin_rotates_the_first_target(groups_gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.default = "openai-chat-json-2"
    for _ in range(3):
        ask(groups_gateway, tag, "rr")
    assert [r.path for r in fresh_mock.requests] == [
        "/v1/chat/completions", "/openai/v1/chat/completions", "/v1/chat/completions"]  # openai, groq, openai


def test_weighted_order_follows_the_weights(groups_gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.default = "openai-chat-json-2"
    for _ in range(3):
        ask(groups_gateway, tag, "heavy-groq")
    assert {r.path for r in fresh_mock.requests} == {"/openai/v1/chat/completions"}  # weight 0: only a fallback


def test_corral_flows_shows_the_alias_beside_the_answering_model(groups_gateway: Gateway, fresh_mock,
                                                                tag: str) -> None:
    fresh_mock.enqueue("openai-chat-json-2")
    ask(groups_gateway, tag, "mini-first")
    groups_gateway.row_for(tag)
    table = corral("flows", "--db", groups_gateway.db, "--limit", "1").stdout
    assert "mini-first: gpt-4o-mini-2024" in table  # the alias, then the model that answered
    listed = json.loads(corral("flows", "--db", groups_gateway.db, "--limit", "1", "--json").stdout)
    assert (listed["requested_model"], listed["model_alias"]) == ("mini-first", "mini-first")


def test_lowest_latency_measures_each_target_before_choosing(groups_gateway: Gateway, fresh_mock, tag: str) -> None:
    fresh_mock.default = "openai-chat-json-2"
    ask(groups_gateway, tag, "quickest")  # neither measured: the listed order
    ask(groups_gateway, tag, "quickest")  # deepseek measured by its answer, groq not yet: groq first
    assert [r.path for r in fresh_mock.requests] == ["/v1/chat/completions", "/openai/v1/chat/completions"]


def test_models_lists_the_aliases(groups_gateway: Gateway) -> None:
    listed = {m.id: m for m in openai.OpenAI(base_url=groups_gateway.url + "/v1", api_key=KEY).models.list()}
    assert {"fast", "mini-first", "rr", "heavy-groq"} <= set(listed)
    assert listed["fast"].owned_by == "corral"
    assert listed["fast"].model_extra == {"targets": [HAIKU, MINI], "strategy": "fallback"}
    assert MINI in listed  # the catalog's models are still listed
