"""Reading an OpenAI chat request's message content, shared by the families' request translations."""

from __future__ import annotations

from typing import Any

from addon.unified.errors import TranslationError


def texts(content: Any, where: str) -> list[str]:
    """The text parts of a message's ``content`` (a string or a list of parts); any other part is refused,
    naming ``where``."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    out = []
    for part in content:
        if part.get("type") != "text":
            raise TranslationError(f"{where}: only text parts are allowed here", where)
        out.append(part.get("text", ""))
    return out
