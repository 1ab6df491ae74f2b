"""The unified endpoint to Bedrock Converse / ConverseStream: the real openai SDK with
``model="bedrock/<model id>"``, the mock answering with recorded real Bedrock exchanges (../shared/corpus)
or, where the corpus has no such case, documented ones (tests/data/unified).

Every translated request the mock receives is validated against botocore's own service model of
bedrock-runtime (ParamValidator: unknown keys and wrong types are errors), and usage and cost of a
unified flow are compared with the same native exchange sent through the explicit proxy (the only way a
SigV4 client reaches Bedrock through Corral).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import threading
from pathlib import Path
from urllib.parse import unquote

import botocore.session
import httpx
import openai
import pytest
from botocore.validate import ParamValidator

from tests.e2e.test_explicit_mode import corral_env
from tests.e2e.test_run import node_sdks as _node_sdks  # noqa: F401  (fixture: the npm openai package)
from tests.e2e.test_unified import KEY, client
from tests.e2e.test_unified_gemini import NODE_STREAM_JS
from tests.support import corpus, doc_examples, eventstream
from tests.support.gateway import Gateway
from tests.support.mock_upstream import Reply
from tests.support.reliability import reliability

SERVICE = botocore.session.get_session().get_service_model("bedrock-runtime")
# A 1x1 PNG.
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def native_request(mock) -> tuple[str, str, dict, dict]:
    """(action, model id, body, headers) of the one request the mock got; the body validated against
    botocore's service model for the operation the path names."""
    assert mock.request_count == 1
    received = mock.requests[0]
    _, model, action = received.path.rsplit("/", 2)
    assert received.path == f"/model/{model}/{action}" and action in ("converse", "converse-stream")
    body = json.loads(received.body)
    operation = SERVICE.operation_model("ConverseStream" if action == "converse-stream" else "Converse")
    report = ParamValidator().validate({**body, "modelId": unquote(model)}, operation.input_shape)
    assert not report.has_errors(), report.generate_report()
    return action, unquote(model), body, received.headers


def unified(gateway: Gateway, tag: str) -> openai.OpenAI:
    """A client whose requests the mock answers from its script (no x-mock-exchange header)."""
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=20,
                         default_headers={"x-test-id": tag})


def native_row(gateway: Gateway, model: str, body: dict, tag: str, exchange: str | None = None,
               stream: bool = False) -> dict:
    """The record of the same exchange sent natively, as a SigV4 client would: through the explicit proxy."""
    env = corral_env(gateway)
    headers = {"content-type": "application/json", "x-test-id": tag, "authorization": f"Bearer {KEY}",
               "accept-encoding": "identity"}
    if exchange:
        headers["x-mock-exchange"] = exchange
    url = ("https://bedrock-runtime.us-east-1.amazonaws.com/model/"
           f"{model.replace(':', '%3A')}/{'converse-stream' if stream else 'converse'}")
    with httpx.Client(proxy=env["HTTPS_PROXY"], verify=ssl.create_default_context(cafile=env["SSL_CERT_FILE"]),
                      timeout=20, trust_env=False) as http:
        assert http.post(url, content=json.dumps(body).encode(), headers=headers).status_code == 200
    return gateway.row_for(tag)


def test_json_text_translated_and_costed_like_native(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "bedrock-converse-json-1"
    recorded = corpus.load(name)
    result = client(gateway, name, tag).chat.completions.create(
        model="bedrock/meta.llama3-2-1b-instruct-v1:0", temperature=0.5, top_p=0.9, max_tokens=256,
        stop=["\nObservation:"], user="alice", seed=7,
        messages=[{"role": "system", "content": "You are an app that knows about everything."},
                  {"role": "developer", "content": "Answer briefly."},
                  {"role": "user", "content": "Tell me a joke about opentelemetry"}])
    choice = result.choices[0]
    recorded_text = json.loads(recorded["response"]["body_text"])["output"]["message"]["content"][0]["text"]
    assert choice.message.content == recorded_text
    assert choice.finish_reason == "stop"
    assert result.model == "meta.llama3-2-1b-instruct-v1:0"  # Converse does not echo it: the one requested
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (52, 30)  # type: ignore[union-attr]

    action, model, body, headers = native_request(fresh_mock)
    assert (action, model) == ("converse", "meta.llama3-2-1b-instruct-v1:0")
    assert fresh_mock.requests[0].path == "/model/meta.llama3-2-1b-instruct-v1%3A0/converse"
    assert body["system"] == [{"text": "You are an app that knows about everything."}, {"text": "Answer briefly."}]
    assert body["messages"] == [{"role": "user", "content": [{"text": "Tell me a joke about opentelemetry"}]}]
    assert body["inferenceConfig"] == {"maxTokens": 256, "temperature": 0.5, "topP": 0.9,
                                       "stopSequences": ["\nObservation:"]}
    assert body["requestMetadata"] == {"user": "alice"}
    assert headers["authorization"] == f"Bearer {KEY}"  # the client's key, as a Bedrock API key

    row = gateway.row_for(tag)
    assert (row["provider"], row["model"]) == ("bedrock", "meta.llama3-2-1b-instruct-v1:0")
    assert row["gateway_path"] == "/bedrock/model/meta.llama3-2-1b-instruct-v1%3A0/converse"
    assert "translated to bedrock" in row["corral_changes"]
    native = native_row(gateway, model, recorded["request"]["body"], tag + "-native", name)
    for column in ("model", "input_tokens", "output_tokens", "cost_usd"):
        assert row[column] == native[column], column
    assert row["cost_usd"] > 0


def test_stream_text_with_usage(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "bedrock-converse-stream-2"
    chunks = list(client(gateway, name, tag).chat.completions.create(
        model="bedrock/us.amazon.nova-micro-v1:0", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "You are a helpful chatbot."},
                  {"role": "user", "content": "What is the capital of France?"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("The capital of France is Paris.")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert not chunks[-1].choices and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (13, 82)
    action, model, body, _headers = native_request(fresh_mock)
    assert (action, model) == ("converse-stream", "us.amazon.nova-micro-v1:0")
    assert "stream" not in body  # ConverseStream is chosen by the path
    row = gateway.row_for(tag)
    assert (row["stream"], row["complete"], row["input_tokens"], row["output_tokens"]) == (True, True, 13, 82)


def test_stream_parallel_tool_calls_reassembled_by_the_sdk(gateway: Gateway, fresh_mock, tag: str) -> None:
    """Reasoning, text and two toolUse blocks streamed: the SDK's stream helper rebuilds both calls, the
    usage chunk counts the cache read, and usage and cost equal the native stream's."""
    name = "bedrock-converse-stream-tooluse"
    model = doc_examples.load(name)["model"]
    fresh_mock.enqueue(doc_examples.reply(name))
    tools = [{"type": "function", "function": {
        "name": "top_song", "description": "Get the most popular song played on a radio station.",
        "parameters": {"type": "object", "properties": {"sign": {"type": "string"}}, "required": ["sign"]}}}]
    with unified(gateway, tag).chat.completions.stream(
            model=f"bedrock/{model}", tools=tools, tool_choice="required",  # type: ignore[arg-type]
            stream_options={"include_usage": True}, parallel_tool_calls=True,
            messages=[{"role": "user", "content": "Top songs on WZPZ and WKRP?"}]) as stream:
        reasoning = [e.chunk.choices[0].delta.model_extra.get("reasoning_content")  # type: ignore[union-attr]
                     for e in stream if e.type == "chunk" and e.chunk.choices]
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []] == [
        ("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "top_song", {"sign": "WZPZ"}),
        ("tooluse_Qm5vT1ZbRpW3hA8kF2eY9g", "top_song", {"sign": "WKRP"})]
    assert message.content == "Let me look both up."
    assert "".join(r for r in reasoning if r) == "The user wants the top songs of two stations."
    assert final.choices[0].finish_reason == "tool_calls"
    usage = final.usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (412 + 1024, 97)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 1024

    _action, _model, body, _headers = native_request(fresh_mock)
    assert body["toolConfig"] == {"tools": [{"toolSpec": {
        "name": "top_song", "description": "Get the most popular song played on a radio station.",
        "inputSchema": {"json": tools[0]["function"]["parameters"]}}}], "toolChoice": {"any": {}}}
    row = gateway.row_for(tag)
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (412, 1024, 97)
    fresh_mock.reset()
    fresh_mock.enqueue(doc_examples.reply(name))
    native = native_row(gateway, model, body, tag + "-native", stream=True)
    for column in ("model", "input_tokens", "cached_input_tokens", "output_tokens", "cost_usd"):
        assert row[column] == native[column], column
    assert row["cost_usd"] > 0


@pytest.mark.parametrize(("name", "model", "first"), [
    ("bedrock-converse-stream-2", "bedrock/us.amazon.nova-micro-v1:0", "The"),
    ("cohere-v2chat-stream-1", "cohere/command", "Ar"),
])
def test_translated_stream_is_not_buffered(gateway: Gateway, fresh_mock, tag: str, name: str, model: str,
                                           first: str) -> None:
    """The upstream holds the rest of its stream (after its first event, the message start) until the client
    has the translated first chunk."""
    hold = threading.Event()
    fresh_mock.enqueue(Reply.from_exchange(name, hold=hold))
    try:
        stream = iter(unified(gateway, tag).chat.completions.create(
            model=model, stream=True, messages=[{"role": "user", "content": "x"}]))
        opening = next(stream).choices[0].delta
    finally:
        hold.set()
    assert (opening.role, opening.content) == ("assistant", "")
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices).startswith(first)


def test_node_openai_stream_helper_reassembles_bedrock_tool_calls(gateway: Gateway, fresh_mock, tag: str,
                                                                  _node_sdks: Path) -> None:  # noqa: F811
    """The npm ``openai`` package's own stream helper over the translated binary event stream."""
    name = "bedrock-converse-stream-tooluse"
    fresh_mock.enqueue(doc_examples.reply(name))
    script = _node_sdks / "unified-bedrock-stream.mjs"
    script.write_text(NODE_STREAM_JS)
    body = {"model": f"bedrock/{doc_examples.load(name)['model']}", "stream_options": {"include_usage": True},
            "tools": [{"type": "function", "function": {"name": "top_song", "parameters": {"type": "object"}}}],
            "messages": [{"role": "user", "content": "Top songs on WZPZ and WKRP?"}]}
    proc = subprocess.run(["node", str(script), gateway.url + "/v1", KEY, tag, json.dumps(body)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = json.loads(proc.stdout)
    calls = final["choices"][0]["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"sign": "WZPZ"}, {"sign": "WKRP"}]
    assert final["choices"][0]["finish_reason"] == "tool_calls"
    assert (final["usage"]["prompt_tokens"], final["usage"]["completion_tokens"]) == (412 + 1024, 97)
    native_request(fresh_mock)


def test_multi_turn_with_image_tool_result_and_named_tool(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "bedrock-converse-tooluse-json"
    fresh_mock.enqueue(doc_examples.reply(name))
    tools = [{"type": "function", "function": {"name": "top_song", "parameters": {
        "type": "object", "properties": {"sign": {"type": "string"}}}}}]
    result = unified(gateway, tag).chat.completions.create(
        model=f"bedrock/{doc_examples.load(name)['model']}", tools=tools,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "top_song"}},
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "What station is on this sign?"},
                                         {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"tooluse_{i}", "type": "function", "function": {"name": "top_song", "arguments": args}}
                for i, args in ((1, '{"sign": "WKRP"}'), (2, '{"sign": "KXYZ"}'))]},
            {"role": "tool", "tool_call_id": "tooluse_1", "content": "Elemental Hotel"},
            {"role": "tool", "tool_call_id": "tooluse_2", "content": [{"type": "text", "text": "Never Gonna"}]},
            {"role": "user", "content": "And WZPZ?"}])
    call = (result.choices[0].message.tool_calls or [])[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "top_song", {"sign": "WZPZ"})
    assert result.choices[0].message.content == "I'll look up the most popular song on WZPZ."
    assert result.choices[0].finish_reason == "tool_calls"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (375, 46)  # type: ignore[union-attr]

    _action, _model, body, _headers = native_request(fresh_mock)
    user, assistant, results = body["messages"]  # the tool results and the next question share a user turn
    assert user["content"][1] == {"image": {"format": "png", "source": {"bytes": PNG}}}
    assert base64.b64decode(user["content"][1]["image"]["source"]["bytes"]).startswith(b"\x89PNG")
    assert assistant == {"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "tooluse_1", "name": "top_song", "input": {"sign": "WKRP"}}},
        {"toolUse": {"toolUseId": "tooluse_2", "name": "top_song", "input": {"sign": "KXYZ"}}}]}
    assert results == {"role": "user", "content": [
        {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "Elemental Hotel"}]}},
        {"toolResult": {"toolUseId": "tooluse_2", "content": [{"text": "Never Gonna"}]}},
        {"text": "And WZPZ?"}]}
    assert body["toolConfig"]["toolChoice"] == {"tool": {"name": "top_song"}}


def test_json_schema_becomes_converse_structured_output(gateway: Gateway, fresh_mock, tag: str) -> None:
    schema = {"type": "object", "properties": {"joke": {"type": "string"}}, "required": ["joke"],
              "additionalProperties": False}
    client(gateway, "bedrock-converse-json-1", tag).chat.completions.create(
        model="bedrock/meta.llama3-2-1b-instruct-v1:0", messages=[{"role": "user", "content": "A joke"}],
        response_format={"type": "json_schema", "json_schema": {"name": "joke", "schema": schema, "strict": True}})
    _action, _model, body, _headers = native_request(fresh_mock)
    structure = body["outputConfig"]["textFormat"]
    assert structure["type"] == "json_schema"
    assert json.loads(structure["structure"]["jsonSchema"]["schema"]) == schema
    assert structure["structure"]["jsonSchema"]["name"] == "joke"


@reliability(
    "bad client input",
    "unified request for Bedrock with what Converse cannot take (an image URL, response_format json_object, ...)",
    "400 in OpenAI's error shape with `param` naming it (openai.BadRequestError); nothing sent upstream",
    "row: status 400, error naming the parameter",
)
@pytest.mark.parametrize(("kwargs", "param"), [
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]},
     "messages[0].content[1].image_url"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"parallel_tool_calls": False, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
     "parallel_tool_calls"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
])
def test_what_converse_cannot_honour_is_refused_naming_it(gateway: Gateway, fresh_mock, tag: str, kwargs: dict,
                                                          param: str) -> None:
    request = {"messages": [{"role": "user", "content": "hi"}], **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        unified(gateway, tag).chat.completions.create(model="bedrock/meta.llama3-2-1b-instruct-v1:0", **request)
    assert err.value.body["param"] == param  # type: ignore[index]
    assert fresh_mock.request_count == 0


def test_inference_profile_arn_is_escaped_into_the_path(gateway: Gateway, fresh_mock, tag: str) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-2-1b-instruct-v1:0"
    client(gateway, "bedrock-converse-json-1", tag).chat.completions.create(
        model=f"bedrock/{arn}", messages=[{"role": "user", "content": "hi"}])
    assert fresh_mock.requests[0].path == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2F"
        "us.meta.llama3-2-1b-instruct-v1%3A0/converse")
    assert gateway.row_for(tag)["model"] == arn


def test_invalid_model_error_raises_bad_request(gateway: Gateway, fresh_mock, tag: str) -> None:
    name = "bedrock-converse-error-1"
    with pytest.raises(openai.BadRequestError) as err:
        client(gateway, name, tag).chat.completions.create(
            model="bedrock/us.does-not-exist-model-v1:0", messages=[{"role": "user", "content": "hello"}])
    assert err.value.body == {"message": "The provided model identifier is invalid.",  # type: ignore[comparison-overlap]
                              "type": "invalid_request_error", "param": None, "code": None}
    assert gateway.row_for(tag)["status"] == 400


@reliability(
    "upstream faults",
    "Bedrock 429 ThrottlingException / 503 behind the unified endpoint",
    "retried as [retries] says; then OpenAI's error shape (RateLimitError / InternalServerError), message kept",
    "row: the status, retries counted",
)
@pytest.mark.parametrize(("name", "error", "status"), [
    ("bedrock-converse-throttling-error", openai.RateLimitError, 429),
    ("bedrock-converse-unavailable-error", openai.InternalServerError, 503),
])
def test_throttling_and_unavailable_are_retried_then_raised(gateway: Gateway, fresh_mock, tag: str, name: str,
                                                            error: type, status: int) -> None:
    answer: Reply = doc_examples.reply(name)
    fresh_mock.enqueue(answer, answer, answer)
    with pytest.raises(error) as err:
        unified(gateway, tag).chat.completions.create(model="bedrock/meta.llama3-2-1b-instruct-v1:0", stream=True,
                                                      messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == status
    assert err.value.body["message"] == doc_examples.load(name)["response"]["body"]["message"]
    assert err.value.response.headers["retry-after"] == "0"
    assert fresh_mock.request_count == 3  # Corral's retries apply as to native flows
    assert gateway.row_for(tag)["status"] == status


@reliability(
    "upstream faults",
    "exception frame inside a Bedrock ConverseStream behind the unified endpoint (throttlingException, ...)",
    "the text so far, then an SSE error event the openai SDK raises as APIError; no [DONE]",
    "row: the stream's error (exception type and message)",
)
def test_exception_frame_mid_stream_raises_in_the_sdk(gateway: Gateway, fresh_mock, tag: str) -> None:
    frames = [eventstream.event("messageStart", {"role": "assistant"}),
              eventstream.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Par"}}),
              eventstream.exception("modelStreamErrorException", "The model stopped unexpectedly.")]
    fresh_mock.enqueue(Reply(200, {"content-type": "application/vnd.amazon.eventstream"}, chunks=frames))
    text = []
    with pytest.raises(openai.APIError) as err:
        for chunk in unified(gateway, tag).chat.completions.create(
                model="bedrock/meta.llama3-2-1b-instruct-v1:0", stream=True,
                messages=[{"role": "user", "content": "hi"}]):
            text.append(chunk.choices[0].delta.content or "")
    assert "".join(text) == "Par"
    assert err.value.message == "The model stopped unexpectedly."
    row = gateway.row_for(tag)
    assert "modelStreamErrorException" in row["error"] and "stopped unexpectedly" in row["error"]


@pytest.mark.parametrize("stream", [False, True])
def test_cache_hit_is_translated_like_the_miss(cache_gateway: Gateway, fresh_mock, tag: str, stream: bool) -> None:
    """The cache keeps the native exchange (JSON, or the binary event stream); a hit is translated like the miss."""
    name = "bedrock-converse-stream-2" if stream else "bedrock-converse-json-1"

    def call():
        result = client(cache_gateway, name, tag).chat.completions.create(
            model="bedrock/us.amazon.nova-micro-v1:0", user=tag, stream=stream,
            messages=[{"role": "user", "content": "What is the capital of France?"}])
        if stream:
            return [c.model_dump(exclude={"created", "id"}) for c in result]  # type: ignore[union-attr]
        return result.model_dump(exclude={"created", "id"})  # type: ignore[union-attr]

    first, second = call(), call()
    assert second == first and first
    assert fresh_mock.request_count == 1, "a hit must not reach the upstream"
    rows = cache_gateway.wait_rows(lambda r: tag in (r.get("request_headers") or ""), 2)
    assert sorted(r["cache"] for r in rows) == ["hit", "miss"]


def test_models_lists_bedrock_and_cohere(gateway: Gateway) -> None:
    ids = {m.id for m in openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0).models.list()}
    assert "bedrock/meta.llama3-2-1b-instruct-v1:0" in ids
    assert "cohere/command-a" in ids


@reliability(
    "secrets",
    "the gateway's own AWS credentials signing a unified Bedrock request ([unified] bedrock_sigv4)",
    "-",
    "row: request headers with the signature and session token redacted",
)
def test_sigv4_signed_with_the_gateways_aws_credentials(mock, tmp_path, tag: str) -> None:
    """[unified] bedrock_sigv4: no Bedrock API key, so the gateway signs with its own AWS credentials; the
    signature the mock receives is the one botocore computes for that request."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    mock.reset()
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token-example")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": creds.access_key, "AWS_SECRET_ACCESS_KEY": creds.secret_key,
           "AWS_SESSION_TOKEN": creds.token, "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    gw = Gateway(mock.url, config={"unified": {"forward_client_key": False, "bedrock_sigv4": True,
                                               "bedrock_region": "us-west-2"}}, workdir=tmp_path)
    gw.start(env=env)
    try:
        result = client(gw, "bedrock-converse-json-1", tag).chat.completions.create(
            model="bedrock/meta.llama3-2-1b-instruct-v1:0", messages=[{"role": "user", "content": "hi"}])
        stored = gw.row_for(tag)["request_headers"]
    finally:
        gw.stop()
    assert result.usage is not None and result.usage.prompt_tokens == 52
    received = mock.requests[0]
    authorization = received.headers["authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{received.headers['x-amz-date'][:8]}"
                                    "/us-west-2/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date;"
                                    "x-amz-security-token, Signature=")
    assert received.headers["x-amz-security-token"] == creds.token
    assert creds.token not in stored and authorization.rsplit("=", 1)[1] not in stored
    expected = AWSRequest(method="POST", url=f"http://{received.headers['host']}{received.path}", data=received.body,
                          headers={k: received.headers[k] for k in ("content-type", "x-amz-date",
                                                                    "x-amz-security-token")})
    expected.context["timestamp"] = received.headers["x-amz-date"]
    auth = SigV4Auth(creds, "bedrock", "us-west-2")
    signature = auth.signature(auth.string_to_sign(expected, auth.canonical_request(expected)), expected)
    assert authorization.endswith(f"Signature={signature}")
