"""A short mutation fuzz run over every stream decoder and family parser (heavy: `make test-heavy`).

Seeds are the recorded streams of ../shared/corpus; each iteration flips, inserts, deletes or
truncates bytes and feeds the result in random chunks. A parser may report a parse error; it may
never raise, hang, or claim a truncated stream is complete.
"""

from __future__ import annotations

import random
import time

import pytest

from providers.formats import get_family
from tests.support import corpus
from tests.support.reliability import reliability

FAMILY = {"openai": "openai", "azure-openai": "openai", "groq": "openai", "mistral": "openai", "deepseek": "openai",
          "openrouter": "openai", "together": "openai", "anthropic": "anthropic", "gemini": "gemini",
          "cohere": "cohere", "bedrock": "bedrock", "ollama": "ollama"}
KIND = {"sse": "sse", "ndjson": "ndjson", "json-array": "json-array", "aws-eventstream": "aws-eventstream"}
SEEDS = [n for n in corpus.success_names() if corpus.load(n)["expect"].get("stream_format") in KIND]
ITERATIONS = 1500


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        pos = rng.randrange(len(buf) + 1)
        if op < 0.3 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op < 0.5:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op < 0.7:
            del buf[pos:pos + rng.randint(1, 64)]
        elif op < 0.85:
            buf[pos:pos] = rng.choice(
                [b"\n\n", b"\r\n", b"data: ", b"[DONE]", b"{", b"}", b"\x00\x00\x00\x10", b'"usage":']
            )
        else:
            del buf[pos:]
    return bytes(buf)


def feed(family_name: str, path: str, kind: str, data: bytes, rng: random.Random):
    parser = get_family(family_name).stream_parser(path, kind)
    i = 0
    while i < len(data):
        step = rng.randint(1, 300)
        parser.feed(data[i:i + step])
        i += step
    return parser.finish()


@reliability("bad client input", "fuzzed streams (bit flips, insertions, deletions, truncation) into every decoder",
             "-", "parse_error at worst; never an exception")
@pytest.mark.heavy
@pytest.mark.parametrize("name", SEEDS)
def test_mutated_streams_never_raise(name: str) -> None:
    ex = corpus.load(name)
    family = FAMILY[ex["provider"]]
    if ex["provider"] == "ollama" and "/v1/" in corpus.request_path(ex):
        family = "openai"
    kind = KIND[ex["expect"]["stream_format"]]
    path = corpus.request_path(ex)
    wire = corpus.response_bytes(ex)
    if ex["expect"].get("content_encoding") == "gzip":
        wire = ex["response"]["body_text"].encode()
    rng = random.Random(name)
    deadline = time.monotonic() + 60
    for _ in range(ITERATIONS):
        fuzzed = mutate(wire, rng)
        result = feed(family, path, kind, fuzzed, rng)  # must not raise
        assert result is not None
        if len(fuzzed) < len(wire) // 2 and not fuzzed.strip():
            assert not result.complete
        assert time.monotonic() < deadline, "a decoder is pathologically slow"
    # Truncation anywhere before the end marker never claims completeness.
    for cut in sorted({rng.randrange(max(1, len(wire) // 2)) for _ in range(50)}):
        assert not feed(family, path, kind, wire[:cut], rng).complete, cut
