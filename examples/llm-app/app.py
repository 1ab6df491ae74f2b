"""A tiny LLM app: the code under test. Nothing in it knows about Corral."""

from __future__ import annotations

import json

import openai


def _client() -> openai.OpenAI:
    return openai.OpenAI(max_retries=0)


def first_tool(question: str) -> str:
    """Which tool the model wants to call first to answer a question about fictional countries."""
    tools = [
        {"type": "function", "function": {
            "name": "lookup_population", "description": "Returns the current population of the specified fictional country",
            "parameters": {"properties": {"country": {"type": "string"}}, "required": ["country"], "type": "object"}}},
        {"type": "function", "function": {
            "name": "can_have_dragons", "description": "Returns True if the specified population can have dragons, False otherwise",
            "parameters": {"properties": {"population": {"type": "integer"}}, "required": ["population"], "type": "object"}}},
    ]
    answer = _client().chat.completions.create(
        model="gpt-4o-mini", stream=False, tools=tools, messages=[{"role": "user", "content": question}])
    call = answer.choices[0].message.tool_calls[0]
    return f"{call.function.name}({json.loads(call.function.arguments)})"


def streamed_tool_call(question: str) -> tuple[str, dict]:
    """The tool call a streamed answer assembles, delta by delta."""
    tools = [{"type": "function", "function": {
        "name": "multiply", "description": "Multiply two numbers.",
        "parameters": {"properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"],
                       "type": "object"}}}]
    name, arguments = "", ""
    stream = _client().chat.completions.create(
        model="gpt-4o-mini", stream=True, stream_options={"include_usage": True}, tools=tools,
        messages=[{"role": "user", "content": question}])
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                name += call.function.name or ""
                arguments += call.function.arguments or ""
    return name, json.loads(arguments)
