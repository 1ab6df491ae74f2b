"""Record once, replay forever: a session of real SDK calls (openai, anthropic, google-genai; JSON,
streams, tool calls) recorded through Corral against the corpus mock, then replayed with the mock
stopped: identical answers, zero upstream connections.

One mock per module (it is stopped mid-module) and one gateway per mode, on a fixture file in tmp.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
from google import genai
from google.genai import types
from ruamel.yaml import YAML

from tests.support import corpus
from tests.support.gateway import REPO_ROOT, Gateway
from tests.support.mock_upstream import MockUpstream
from tests.support.reliability import reliability

OPENAI_KEY = "sk-fixture-openai-SECRET-0123456789"
ANTHROPIC_KEY = "sk-ant-fixture-SECRET-0123456789"
GEMINI_KEY = "AIza-fixture-SECRET-0123456789"


def dump(obj):
    return obj.model_dump(exclude_none=False) if hasattr(obj, "model_dump") else obj


def gemini_dump(obj) -> dict:
    data = obj.model_dump()
    data.pop("sdk_http_response", None)  # transport headers: Corral's x-corral-* and the framing differ
    return data


def session(gw: Gateway) -> dict[str, object]:
    """The app's LLM calls: what each SDK parsed, by name."""
    out: dict[str, object] = {}
    oai = openai.OpenAI(base_url=gw.base("openai") + "/v1", api_key=OPENAI_KEY, max_retries=0, timeout=20)
    for name in ("openai-chat-json-1", "openai-chat-stream-2"):  # the JSON one is a tool call
        body = corpus.load(name)["request"]["body"]
        result = oai.chat.completions.create(**body, extra_headers={"x-mock-exchange": name})
        out[name] = [dump(c) for c in result] if body.get("stream") else dump(result)
    ant = anthropic.Anthropic(base_url=gw.base("anthropic"), api_key=ANTHROPIC_KEY, max_retries=0, timeout=20)
    for name in ("anthropic-messages-json-1", "anthropic-messages-stream-2"):  # both with tools
        body = dict(corpus.load(name)["request"]["body"])
        core = {k: body.pop(k) for k in ("model", "messages", "max_tokens", "stream") if k in body}
        result = ant.messages.create(**core, extra_body=body, extra_headers={"x-mock-exchange": name})
        out[name] = [dump(e) for e in result] if core.get("stream") else dump(result)
    client = genai.Client(api_key=GEMINI_KEY, http_options=types.HttpOptions(
        base_url=gw.base("gemini"), headers={"x-mock-exchange": "gemini-generatecontent-json-1"}))
    out["gemini-json"] = gemini_dump(client.models.generate_content(model="gemini-2.0-flash", contents="hello"))
    client = genai.Client(api_key=GEMINI_KEY, http_options=types.HttpOptions(
        base_url=gw.base("gemini"), headers={"x-mock-exchange": "gemini-streamgeneratecontent-stream-1"}))
    out["gemini-stream"] = [gemini_dump(c) for c in client.models.generate_content_stream(
        model="gemini-2.0-flash-exp", contents="hello")]
    return out


def fixture_gateway(upstream: str | None, fixtures: Path, mode: str, *sets: str) -> Gateway:
    return Gateway(upstream, args=["--mode", mode, "--fixtures", str(fixtures)], sets=list(sets))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, object], MockUpstream]]:
    """The session recorded once; the mock is stopped afterwards, so nothing can reach it again."""
    folder = tmp_path_factory.mktemp("fixtures")
    mock = MockUpstream()
    mock.start()
    try:
        with fixture_gateway(mock.url, folder, "record") as gw:
            answers = session(gw)
        assert mock.request_count == 6
    finally:
        mock.stop()
    yield folder / "default.yaml", answers, mock


@reliability("isolation", "replay mode: the app's whole session with the providers unreachable",
             "the recorded answers, identical (JSON, streams, tool calls)",
             "rows as usual, cost 0; no upstream connection")
def test_a_recorded_session_replays_identically_without_any_upstream(recorded) -> None:
    path, answers, mock = recorded
    with fixture_gateway(None, path.parent, "replay") as gw:
        assert session(gw) == answers
        rows = gw.wait_rows(lambda r: True, 6)
    assert mock.request_count == 6, "replay must not reach any upstream"
    assert {r["provider"] for r in rows} == {"openai", "anthropic", "gemini"}
    assert all(r["cost_usd"] in (0, None) for r in rows)
    assert any(r["output_tokens"] for r in rows), "the meter reads usage from the replayed answers"


def test_paced_replay_gives_the_same_streams(recorded) -> None:
    path, answers, _ = recorded
    with fixture_gateway(None, path.parent, "replay", "corral_fixtures_pace=original") as gw:
        assert session(gw) == answers


@reliability("secrets", "credentials in a recorded fixture set", "-",
             "no API key in the file (headers dropped, key= parameters removed from paths)")
def test_the_fixture_file_holds_no_credential_and_is_readable(recorded) -> None:
    path, _, _ = recorded
    text = path.read_text()
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY, "SECRET"):
        assert secret not in text
    doc = YAML(typ="safe").load(text)
    assert len(doc["exchanges"]) == 6
    kinds = {(e["provider"], e["stream"]) for e in doc["exchanges"]}
    assert kinds == {(p, s) for p in ("openai", "anthropic", "gemini") for s in (True, False)}
    json_answer = next(e for e in doc["exchanges"] if e["provider"] == "openai" and not e["stream"])
    assert isinstance(json_answer["response"]["json"], dict), "JSON bodies are stored as mappings"
    stream = next(e for e in doc["exchanges"] if e["provider"] == "openai" and e["stream"])
    assert len(stream["response"]["chunks"]) > 1 and stream["response"]["chunks"][0]["data"].startswith("data: {")
    # This recorded Anthropic stream came gzip-compressed: it is kept decoded, as one chunk, readable.
    gzipped = next(e for e in doc["exchanges"] if e["provider"] == "anthropic" and e["stream"])
    assert gzipped["response"]["chunks"][0]["data"].startswith("event: message_start")
    assert "content-encoding" not in {k for k, _ in gzipped["response"]["headers"]}


def test_a_changed_prompt_fails_loudly_naming_the_field(recorded) -> None:
    path, _, _ = recorded
    name = "openai-chat-json-1"
    body = corpus.load(name)["request"]["body"]
    messages = [dict(m) for m in body["messages"]]
    messages[0]["content"] = "something else entirely"
    with fixture_gateway(None, path.parent, "replay") as gw:
        oai = openai.OpenAI(base_url=gw.base("openai") + "/v1", api_key="sk-other", max_retries=2, timeout=20)
        with pytest.raises(openai.APIStatusError) as err:
            oai.chat.completions.create(**{**body, "messages": messages})
        assert err.value.status_code == 599
        message = str(err.value)
        assert "messages[0].content" in message and "/v1/chat/completions" in message
        rows = gw.wait_rows(lambda r: True, 1)
    assert len(rows) == 1, "x-should-retry: false: the SDK did not retry the miss"


def test_repeated_requests_get_their_answers_in_order(tmp_path: Path) -> None:
    """The same request twice, answered differently while recording (the mock picks the answer by a
    header that is not part of the match): replay gives the first answer first."""
    body = corpus.load("openai-chat-json-2")["request"]["body"]
    with MockUpstream() as mock:
        with fixture_gateway(mock.url, tmp_path, "record") as gw:
            oai = openai.OpenAI(base_url=gw.base("openai") + "/v1", api_key="sk-a", max_retries=0, timeout=20)
            first = [dump(oai.chat.completions.create(**body, extra_headers={"x-mock-exchange": name}))
                     for name in ("openai-chat-json-2", "openai-chat-json-1")]
    assert first[0] != first[1]
    with fixture_gateway(None, tmp_path, "replay") as gw:
        oai = openai.OpenAI(base_url=gw.base("openai") + "/v1", api_key="sk-b", max_retries=0, timeout=20)
        again = [dump(oai.chat.completions.create(**body)) for _ in range(3)]
    assert again == [first[0], first[1], first[1]]  # past the last, the last repeats


def corral(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "addon.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=60)


def test_an_answer_edited_by_hand_is_served(recorded, tmp_path: Path) -> None:
    path, _, _ = recorded
    shown = corral("fixtures", "show", str(path))
    assert shown.returncode == 0, shown.stderr
    yaml = YAML()
    doc = yaml.load(shown.stdout)
    entry = next(e for e in doc["exchanges"] if e["provider"] == "openai" and not e["stream"])
    entry["response"]["json"]["choices"][0]["message"]["content"] = "edited by hand"
    entry["response"]["json"]["choices"][0]["message"]["tool_calls"] = None
    edited = tmp_path / "edited.yaml"
    with edited.open("w") as f:
        yaml.dump(doc, f)
    name = "openai-chat-json-1"
    with fixture_gateway(None, edited, "replay") as gw:
        oai = openai.OpenAI(base_url=gw.base("openai") + "/v1", api_key="sk-c", max_retries=0, timeout=20)
        result = oai.chat.completions.create(**corpus.load(name)["request"]["body"])
    assert result.choices[0].message.content == "edited by hand"
    listed = corral("fixtures", "list", str(path.parent))
    assert "default.yaml" in listed.stdout and " 6 " in listed.stdout, listed.stdout


EXAMPLE = REPO_ROOT / "examples" / "llm-app"


def run_example(fixtures: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests"),
                           f"--corral-fixtures={fixtures}"], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=120)


def test_the_example_apps_tests_pass_offline_on_its_committed_fixtures() -> None:
    """examples/llm-app: stock openai SDK code, tests run through the pytest plugin with no upstream."""
    result = run_example(EXAMPLE / "fixtures")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 passed" in result.stdout


def test_the_example_fails_loudly_without_its_fixtures(tmp_path: Path) -> None:
    result = run_example(tmp_path)
    assert result.returncode == 1
    assert "599" in result.stdout and "no recorded exchange for POST /v1/chat/completions" in result.stdout


def test_explicit_mode_replays_the_same_set(tmp_path: Path) -> None:
    """A client that only sets HTTPS_PROXY and the CA (no base URL) is answered from the same fixture set:
    the set keeps the upstream path, which both modes share."""
    import ssl

    import httpx

    from addon import ca
    from tests.e2e.test_explicit_mode import corral_env

    body = corpus.load("openai-chat-json-1")["request"]["body"]
    with fixture_gateway(None, EXAMPLE / "fixtures", "replay") as gw:
        env = corral_env(gw)
        ca.write_bundle(ca.CaFiles(gw.workdir / "certs"))
        trust = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
        with httpx.Client(proxy=env["HTTPS_PROXY"], verify=trust, timeout=20, trust_env=False) as client:
            r = client.post("https://api.openai.com/v1/chat/completions", json=body,
                            headers={"authorization": "Bearer sk-explicit-not-real"})
        row = gw.wait_rows(lambda r: True, 1)[0]
    assert r.status_code == 200 and r.headers["x-corral-fixture"] == "replayed"
    assert r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup_population"
    assert row["mode"] == "explicit" and row["cost_usd"] in (0, None)


def test_the_unified_endpoint_records_and_replays_the_native_exchange(tmp_path: Path) -> None:
    """OpenAI SDK at /v1 with an anthropic/... model: the set keeps the native Anthropic exchange, and the
    replay is translated back exactly as the live answer was."""
    def ask(gw: Gateway, headers: dict[str, str]):
        oai = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-ant-unified-fixture", max_retries=0, timeout=20,
                            default_headers=headers)
        stream = oai.chat.completions.create(model="anthropic/claude-haiku-4-5", max_tokens=64, stream=True,
                                             messages=[{"role": "user", "content": "hello"}])
        return [dump(c) for c in stream]

    with MockUpstream() as mock:
        with fixture_gateway(mock.url, tmp_path, "record") as gw:
            live = ask(gw, {"x-mock-exchange": "anthropic-messages-stream-1"})
    with fixture_gateway(None, tmp_path, "replay") as gw:
        replayed = ask(gw, {})

    def stable(chunks):  # the translation names each chunk by time; the content is what must match
        return [{k: v for k, v in c.items() if k != "created"} for c in chunks]

    assert stable(replayed) == stable(live) and len(live) > 2
    doc = YAML(typ="safe").load((tmp_path / "default.yaml").read_text())
    assert [(e["provider"], e["request"]["path"]) for e in doc["exchanges"]] == [("anthropic", "/v1/messages")]
