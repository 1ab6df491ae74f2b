"""Derive the endpoint lists in this folder from a provider's published OpenAPI document.

    python tests/data/openapi/derive.py <openapi.json> <server base path> > <provider>.endpoints.json

The documents are megabytes; the fidelity tests need only, per operation: method, path (with the
server's base path, e.g. /v1), the request content types, and whether the request schema declares a
top-level ``stream`` and ``stream_options`` property, and whether that ``stream_options`` has
``include_usage`` (following $ref, allOf, anyOf, oneOf).
Sources and versions are in README.md beside this script.
"""

from __future__ import annotations

import json
import sys
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete", "head")


def resolve(doc: dict[str, Any], schema: Any, seen: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The object schemas ``schema`` can be, following references and compositions."""
    if not isinstance(schema, dict):
        return []
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if ref in seen:
            return []
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return resolve(doc, node, seen | {ref})
    out = [schema]
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key) or []:
            out += resolve(doc, sub, seen)
    return out


def properties(doc: dict[str, Any], schema: Any) -> dict[str, list[Any]]:
    """Property name -> the schemas declared for it, over every shape ``schema`` can take."""
    found: dict[str, list[Any]] = {}
    for part in resolve(doc, schema):
        for name, sub in (part.get("properties") or {}).items():
            found.setdefault(name, []).append(sub)
    return found


def endpoints(doc: dict[str, Any], base: str) -> list[dict[str, Any]]:
    rows = []
    for path, item in sorted(doc["paths"].items()):
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            content = (op.get("requestBody") or {}).get("content") or {}
            props: dict[str, list[Any]] = {}
            for media in content.values():
                for name, subs in properties(doc, media.get("schema")).items():
                    props.setdefault(name, []).extend(subs)
            usage_option = any("include_usage" in properties(doc, sub) for sub in props.get("stream_options", []))
            rows.append({
                "method": method.upper(),
                "path": base + path,
                "content_types": sorted(content),
                "stream": "stream" in props,
                "stream_options": "stream_options" in props,
                "include_usage": usage_option,
            })
    return rows


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        document = json.load(f)
    rows = endpoints(document, sys.argv[2] if len(sys.argv) > 2 else "")
    sys.stdout.write("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")  # one endpoint a line
