"""Every recorded exchange in the shared corpus, parsed by its family handler, must give back the
numbers the corpus says the provider reported."""

from __future__ import annotations

import base64
import functools
import gzip
import json
import os
import random
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from providers.formats import FAMILIES, get_family
from providers.formats.base import Family, ParseResult

OPENAI_COMPATIBLE = {"openai", "azure", "azure-openai", "groq", "mistral", "deepseek", "openrouter", "together"}


try:  # the shared helper, when present; otherwise read the files directly
    from tests.support.corpus import CORPUS_DIR as _CORPUS_DIR
except ImportError:
    _CORPUS_DIR = Path(
        os.environ.get("CORRAL_CORPUS_DIR") or Path(__file__).resolve().parents[4] / "shared" / "corpus"
    )

CORPUS = Path(_CORPUS_DIR)
NAMES = sorted(p.stem for p in CORPUS.glob("*.json"))


@functools.cache
def load(name: str) -> dict[str, Any]:
    return json.loads((CORPUS / f"{name}.json").read_text(encoding="utf-8"))


def family_for(case: dict[str, Any]) -> Family:
    provider = case["provider"]
    if provider in OPENAI_COMPATIBLE:
        return get_family("openai")
    if provider == "ollama":
        native = urlsplit(case["request"]["url"]).path.startswith("/api/")
        return get_family("ollama" if native else "openai")
    return get_family(provider)


def request_path(case: dict[str, Any]) -> str:
    u = urlsplit(case["request"]["url"])
    return u.path + (f"?{u.query}" if u.query else "")


def request_body(case: dict[str, Any]) -> bytes:
    body = case["request"].get("body")
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else json.dumps(body).encode()


def response_bytes(case: dict[str, Any]) -> bytes:
    """Decoded wire bytes: what the handlers are fed after content-encoding is undone."""
    resp = case["response"]
    if resp.get("body_text") is not None:
        return resp["body_text"].encode("utf-8")
    raw = base64.b64decode(resp["body_base64"])
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def content_type(case: dict[str, Any]) -> str:
    ct = case["response"]["headers"].get("content-type", "")
    return ct[0] if isinstance(ct, list) else ct


def parse_stream(family: Family, path: str, kind: str, data: bytes, sizes: list[int]) -> ParseResult:
    parser = family.stream_parser(path, kind)
    i = 0
    for size in sizes:
        if i >= len(data):
            break
        parser.feed(data[i : i + size])
        i += size
    parser.feed(data[i:])
    return parser.finish()


def random_sizes(seed: str, total: int) -> list[int]:
    rng = random.Random(seed)
    sizes = []
    while sum(sizes) < total:
        sizes.append(rng.randint(1, 64))
    return sizes


def parse_case(name: str, sizes: list[int] | None = None) -> tuple[ParseResult, dict[str, Any]]:
    case = load(name)
    family = family_for(case)
    path = request_path(case)
    data = response_bytes(case)
    status = case["response"]["status"]
    kind = family.stream_kind(path, content_type(case)) if status < 300 else None
    if kind is None:
        result = family.parse_response(path, status, data)
    else:
        result = parse_stream(family, path, kind, data, sizes or random_sizes(name, len(data)))
    return result, case


SUCCESS = [n for n in NAMES if "-error-" not in n]
ERRORS = [n for n in NAMES if "-error-" in n]


def test_corpus_present() -> None:
    assert len(NAMES) >= 59, CORPUS
    assert set(FAMILIES) == {"openai", "anthropic", "gemini", "cohere", "bedrock", "ollama"}


def assert_matches_expect(result: ParseResult, case: dict[str, Any]) -> None:
    exp = case["expect"]
    req = family_for(case).parse_request(request_path(case), request_body(case))
    # Cohere and Bedrock Converse do not echo the model: the gateway falls back to the request's.
    assert (result.model or req.model) == exp["model"]
    u = result.usage
    assert u.input_tokens == exp["input_tokens"]
    assert u.output_tokens == exp["output_tokens"]
    assert u.cached_input_tokens == exp.get("cached_input_tokens", exp.get("cache_read_input_tokens"))
    assert u.cache_creation_input_tokens == exp.get("cache_creation_input_tokens")
    assert u.reasoning_tokens == exp.get("reasoning_tokens")
    if "total_tokens" in exp:
        assert u.total_tokens == exp["total_tokens"]
    reason = exp.get("finish_reason", exp.get("stop_reason"))
    if reason is not None:
        assert result.finish_reason == reason
    assert result.complete is True
    assert result.parse_error is None


@pytest.mark.parametrize("name", SUCCESS)
def test_success(name: str) -> None:
    result, case = parse_case(name)
    assert_matches_expect(result, case)
    in_stream = case["expect"].get("in_stream_error")
    if in_stream:
        assert result.error is not None and in_stream["message"] in result.error
    else:
        assert result.error is None


@pytest.mark.parametrize(
    "name", ["openai-chat-stream-1", "anthropic-messages-stream-1", "bedrock-converse-stream-2",
             "gemini-streamgeneratecontent-stream-1", "gemini-streamgeneratecontent-stream-2",
             "cohere-v1chat-stream-1", "bedrock-invoke-stream-1"]
)
def test_stream_one_byte_at_a_time(name: str) -> None:
    case = load(name)
    result, case = parse_case(name, sizes=[1] * len(response_bytes(case)))
    assert_matches_expect(result, case)


@pytest.mark.parametrize("name", ERRORS)
def test_error(name: str) -> None:
    result, case = parse_case(name)
    exp = case["expect"]
    assert result.error is not None
    assert exp["error_message"] in result.error
    if exp.get("error_type"):
        assert exp["error_type"] in result.error
    assert result.usage.input_tokens is None and result.usage.output_tokens is None
    req = family_for(case).parse_request(request_path(case), request_body(case))
    assert (result.model or req.model) == exp["model"]


@pytest.mark.parametrize("name", NAMES)
def test_request(name: str) -> None:
    case = load(name)
    info = family_for(case).parse_request(request_path(case), request_body(case))
    body = case["request"].get("body")
    streamed = case["expect"]["stream_format"] not in ("json",) or (
        isinstance(body, dict) and body.get("stream") is True
    )
    if case["provider"] in ("gemini", "bedrock"):
        streamed = "stream" in urlsplit(case["request"]["url"]).path.lower()
    elif case["provider"] == "ollama" and isinstance(body, dict) and "stream" not in body:
        streamed = True
    assert info.stream is streamed
    if case["expect"].get("model_source", "").startswith("request"):
        assert info.model == case["expect"]["model"]


@pytest.mark.parametrize("name", [n for n in SUCCESS if load(n)["expect"]["stream_format"] != "json"])
def test_stream_kind(name: str) -> None:
    case = load(name)
    kind = family_for(case).stream_kind(request_path(case), content_type(case))
    assert kind == case["expect"]["stream_format"]


def test_include_usage_flag() -> None:
    openai = get_family("openai")
    case = load("openai-chat-stream-1")
    assert openai.parse_request(request_path(case), request_body(case)).include_usage is True
    case = load("azure-openai-chat-stream-1")
    info = openai.parse_request(request_path(case), request_body(case))
    assert info.stream is True and info.include_usage is False
    assert openai.parse_request("/v1/chat/completions", b'{"model":"m"}').include_usage is None


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("kind", ["not_found", "rate_limited", "upstream_unavailable", "bad_request", "timeout"])
def test_error_body_round_trips(family: str, kind: str) -> None:
    """A gateway-made error must read back, through the same family, as an error with our text."""
    fam = get_family(family)
    body, ct = fam.error_body(429, "no capacity for you", kind)
    assert ct == "application/json"
    assert isinstance(json.loads(body), dict)
    result = fam.parse_response("/v1/models/x:generateContent", 429, body)
    assert result.error is not None and "no capacity for you" in result.error
