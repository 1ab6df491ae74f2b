"""Editing a JSON request body in place: one field added, every other byte as the client sent it.

Re-serialising a body changes what the client meant: ``1e400`` becomes ``Infinity`` (invalid JSON),
duplicate keys collapse, number formats, escapes and whitespace change. So Corral never re-encodes
a client's body; it finds the spans of the top-level members with a tokenizer that only skips
strings and brackets, and splices the new bytes in. When the body is not a plain object it can
edit safely (say, the member it would edit appears twice), it leaves the body alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_WS = re.compile(rb"[ \t\r\n]*")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
# Inside a nested value only strings and brackets matter: a string is skipped whole (a C-speed match
# even for megabytes of base64), so a bracket inside one is never counted.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_SCALAR = re.compile(rb"[^,}\]\s]+")


class EditError(ValueError):
    """The body is not a JSON object this module can edit safely."""


@dataclass(frozen=True)
class Member:
    name: str
    value_start: int
    value_end: int


@dataclass(frozen=True)
class Edit:
    """``removed`` (bytes at ``at`` in the client's body) replaced by ``added``."""

    at: int
    removed: bytes
    added: bytes

    def apply(self, body: bytes) -> bytes:
        return body[: self.at] + self.added + body[self.at + len(self.removed):]

    def undo(self, edited: bytes) -> bytes:
        """The client's body back from the edited one."""
        return edited[: self.at] + self.removed + edited[self.at + len(self.added):]

    def describe(self) -> str:
        added = self.added.decode("utf-8", "replace").strip(",")
        if self.removed:
            return f"request body: {self.removed.decode('utf-8', 'replace')} -> {added} at byte {self.at}"
        return f"request body: added {added} at byte {self.at}"


def _skip_ws(buf: bytes, pos: int) -> int:
    m = _WS.match(buf, pos)
    return m.end() if m else pos


def _value_end(buf: bytes, pos: int) -> int:
    """Index just past the JSON value starting at ``pos``."""
    c = buf[pos:pos + 1]
    if c == b'"':
        m = _STRING.match(buf, pos)
        if not m:
            raise EditError("unterminated string")
        return m.end()
    if c in (b"{", b"["):
        depth = 0
        for m in _TOKEN.finditer(buf, pos):
            tok = m.group()
            if tok in (b"{", b"["):
                depth += 1
            elif tok in (b"}", b"]"):
                depth -= 1
                if depth == 0:
                    return m.end()
        raise EditError("unterminated value")
    m = _SCALAR.match(buf, pos)
    if not m:
        raise EditError(f"no value at byte {pos}")
    return m.end()


def object_members(buf: bytes, start: int = 0) -> tuple[int, list[Member], int]:
    """(index just past the ``{``, members, index of the closing ``}``) of the object at ``start``."""
    pos = _skip_ws(buf, start)
    if buf[pos:pos + 1] != b"{":
        raise EditError("not a JSON object")
    open_end = pos + 1
    members: list[Member] = []
    pos = _skip_ws(buf, open_end)
    if buf[pos:pos + 1] == b"}":
        return open_end, members, pos
    while True:
        m = _STRING.match(buf, pos)
        if not m:
            raise EditError(f"expected a member name at byte {pos}")
        try:
            name = json.loads(m.group())
        except ValueError as e:
            raise EditError(f"bad member name at byte {pos}") from e
        pos = _skip_ws(buf, m.end())
        if buf[pos:pos + 1] != b":":
            raise EditError(f"expected ':' at byte {pos}")
        value_start = _skip_ws(buf, pos + 1)
        value_end = _value_end(buf, value_start)
        members.append(Member(name, value_start, value_end))
        pos = _skip_ws(buf, value_end)
        sep = buf[pos:pos + 1]
        if sep == b"}":
            return open_end, members, pos
        if sep != b",":
            raise EditError(f"expected ',' or '}}' at byte {pos}")
        pos = _skip_ws(buf, pos + 1)


def set_nested_true(body: bytes, outer: str, inner: str) -> Edit | None:
    """The edit that makes ``body[outer][inner]`` the JSON ``true``, touching nothing else; None when
    it is already true or the body cannot be edited safely (not an object, ``outer`` twice or of
    another type, ``inner`` twice, bytes that are not JSON)."""
    try:
        json.loads(body)  # the tokenizer trusts its input to be JSON
        open_end, members, _ = object_members(body)
    except (ValueError, RecursionError):
        return None
    found = [m for m in members if m.name == outer]
    field = json.dumps({inner: True}, separators=(",", ":")).encode()  # {"inner":true}
    if not found:
        return Edit(open_end, b"", json.dumps(outer).encode() + b":" + field + b",")
    if len(found) > 1:
        return None
    value = found[0]
    raw = body[value.value_start:value.value_end]
    if raw == b"null":
        return Edit(value.value_start, raw, field)
    if not raw.startswith(b"{"):
        return None
    try:
        inner_open, inner_members, _ = object_members(body, value.value_start)
    except EditError:
        return None
    hits = [m for m in inner_members if m.name == inner]
    if not hits:
        sep = b"," if inner_members else b""
        return Edit(inner_open, b"", field[1:-1] + sep)
    if len(hits) > 1:
        return None
    current = body[hits[0].value_start:hits[0].value_end]
    if current == b"true":
        return None
    return Edit(hits[0].value_start, current, b"true")
