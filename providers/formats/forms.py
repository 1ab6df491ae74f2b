"""The text fields of a multipart/form-data request body (``model``, ``stream`` of an audio
transcription, an image edit, a file upload), read without copying its files."""

from __future__ import annotations

import re

_NAME = re.compile(rb'(?i)\bname="([^"]*)"')
_FILENAME = re.compile(rb"(?i)\bfilename\*?=")
# Text fields worth reading are short; a longer part is a file or a prompt Corral does not need.
_FIELD_LIMIT = 4096


def boundary(content_type: str) -> bytes | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary" and value:
            return value.strip().strip('"').encode("latin-1", "replace")
    return None


def form_fields(body: bytes, content_type: str) -> dict[str, str]:
    """Name -> value of the short text fields (parts without a filename); {} when not parseable."""
    sep = boundary(content_type)
    if not sep:
        return {}
    delimiter = b"--" + sep
    fields: dict[str, str] = {}
    pos = body.find(delimiter)
    while pos >= 0:
        start = pos + len(delimiter)
        if body[start:start + 2] == b"--":
            break  # the closing delimiter
        head_end = body.find(b"\r\n\r\n", start)
        nxt = body.find(b"\r\n" + delimiter, start)
        if head_end < 0 or nxt < 0 or head_end > nxt:
            break
        head = body[start:head_end]
        name = _NAME.search(head)
        value = body[head_end + 4:nxt]
        if name and not _FILENAME.search(head) and len(value) <= _FIELD_LIMIT:
            fields.setdefault(name.group(1).decode("utf-8", "replace"), value.decode("utf-8", "replace"))
        pos = nxt + 2
    return fields
