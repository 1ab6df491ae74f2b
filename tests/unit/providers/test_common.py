"""providers/formats/common.py helpers that several families share."""

from __future__ import annotations

import pytest

from providers.formats.common import block_text, error_envelope, model_and_stream, response_error


def test_block_text_joins_text_blocks_and_can_filter_by_type() -> None:
    blocks = [{"type": "text", "text": "Hel"}, {"type": "tool_use", "text": "x"}, "junk",
              {"type": "text", "text": "lo"}]
    assert block_text(blocks) == "Helxlo"
    assert block_text(blocks, "text") == "Hello"
    assert block_text([{"type": "image"}]) is None and block_text("text") is None and block_text(None) is None


def test_model_and_stream() -> None:
    info = model_and_stream(b'{"model": "m", "stream": true}')
    assert (info.model, info.stream, info.parse_error) == ("m", True, None)
    assert model_and_stream(b'{"model": "m"}', stream_default=True).stream is True  # Ollama's /api/chat
    assert model_and_stream(b'{"model": "m", "stream": false}', stream_default=True).stream is False
    assert model_and_stream(b"").parse_error is None  # nothing to parse is not a parse error
    assert model_and_stream(b'{"model": 3}').parse_error == "request field 'model' is not a string"


def test_response_error() -> None:
    assert response_error(200, None, "ignored") is None
    assert response_error(200, "overloaded: busy") == "overloaded: busy"  # an error inside a 200 counts
    assert response_error(500, None, "boom") == "500: boom"
    assert response_error(502, None) == "502"
    assert response_error(429, "rate_limit: slow down", "other") == "rate_limit: slow down"


@pytest.mark.parametrize("doc, envelope", [
    ({"error": {"message": "bad", "type": "server_error"}}, True),
    ({"error": "model not found"}, True),  # Ollama
    ({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, True),  # Anthropic
    ({"id": "resp_1", "object": "response", "status": "failed", "error": {"code": "x", "message": "y"}}, False),
    ({"id": "ftjob_1", "object": "fine_tuning.job", "error": None}, False),
    ({"object": "video", "id": "v1", "error": {"code": "moderation"}}, False),
    ({"error": None}, False),
    ([{"error": "x"}], False),
])
def test_error_envelope(doc, envelope: bool) -> None:
    assert error_envelope(doc) is envelope
