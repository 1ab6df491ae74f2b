"""The wire families the unified endpoint translates to and from, one entry each.

A family's modules (``<family>_*``) provide what an entry needs; the rest of the unified endpoint
(routing, ``UnifiedRequest``, ``UnifiedResponse``) only looks a family up here, so adding one is a module
and a line below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class StreamTranslator(Protocol):
    def feed(self, data: bytes) -> bytes:
        """OpenAI SSE bytes for the complete native events in ``data`` (and what was buffered before)."""

    def finish_stream(self) -> bytes:
        """What is still owed at the end of the native stream (the usage chunk, ``[DONE]``)."""


@dataclass(frozen=True)
class Translation:
    family: str
    # (native model, stream requested) -> the native path after the provider's prefix.
    path: Callable[[str, bool], str]
    # (OpenAI chat request, native model) -> the native request body; raises TranslationError.
    to_native: Callable[[dict[str, Any], str], dict[str, Any]]
    # (status, whole native body, decoded[, model]) -> OpenAI's chat completion or error JSON.
    translate_whole: Callable[..., bytes]
    # (include_usage[, model]) -> a translator of the native stream into OpenAI chunks.
    stream_translator: Callable[..., StreamTranslator]
    # A media type fragment that marks a streamed native answer.
    stream_media: str = "event-stream"
    # False when the native answer does not name the model (Converse, Cohere v2): the two callables above
    # then also get the native model the request named, as their last argument.
    model_in_answer: bool = True


def _anthropic() -> Translation:
    from addon.unified import anthropic_request, anthropic_response
    from addon.unified.anthropic_stream import AnthropicStreamTranslator

    return Translation("anthropic", lambda model, stream: "/v1/messages", anthropic_request.to_anthropic,
                       anthropic_response.translate_whole, AnthropicStreamTranslator)


def _gemini() -> Translation:
    from addon.unified import gemini_request, gemini_response
    from addon.unified.gemini_stream import GeminiStreamTranslator

    return Translation("gemini", gemini_request.path, gemini_request.to_gemini, gemini_response.translate_whole,
                       GeminiStreamTranslator)


def _ollama() -> Translation:
    from addon.unified import ollama_request, ollama_response

    return Translation("ollama", ollama_request.path, ollama_request.to_ollama, ollama_response.translate_whole,
                       ollama_response.OllamaStreamTranslator, stream_media="ndjson")


def _bedrock() -> Translation:
    from addon.unified import bedrock_request, bedrock_response
    from addon.unified.bedrock_stream import BedrockStreamTranslator

    return Translation("bedrock", bedrock_request.path, bedrock_request.to_bedrock, bedrock_response.translate_whole,
                       BedrockStreamTranslator, stream_media="amazon.eventstream", model_in_answer=False)


def _cohere() -> Translation:
    from addon.unified import cohere_request, cohere_response
    from addon.unified.cohere_stream import CohereStreamTranslator

    return Translation("cohere", lambda model, stream: "/v2/chat", cohere_request.to_cohere,
                       cohere_response.translate_whole, CohereStreamTranslator, model_in_answer=False)


TRANSLATIONS: dict[str, Translation] = {t.family: t for t in (_anthropic(), _gemini(), _ollama(), _bedrock(),
                                                              _cohere())}
