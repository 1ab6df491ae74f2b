"""The unified OpenAI-compatible front door: ``POST /v1/chat/completions`` and ``GET /v1/models`` at the
gateway root, with ``"model": "<catalog provider>/<model>"``.

The Router resolves the model to a provider (``routing.py``, catalog data); ``UnifiedRequest`` turns the
OpenAI request into the provider's native one and ``UnifiedResponse`` turns the native answer (JSON, SSE,
errors) back into OpenAI's shape, after the Meter and the Recorder have seen the native exchange.
One module per concern: ``families`` (the registry of translated wire families), ``chat_parts`` (reading
message content), ``anthropic_request``,
``anthropic_response``, ``anthropic_stream``, ``errors``.
"""
