"""Provider answers taken from published documentation (tests/data/unified/, see its README), for the
cases the recorded corpus lacks; served by the mock like a recorded exchange."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from tests.support import eventstream
from tests.support.mock_upstream import Reply

DIR = Path(__file__).resolve().parents[1] / "data" / "unified"


@functools.cache
def load(name: str) -> dict[str, Any]:
    with (DIR / f"{name}.json").open(encoding="utf-8") as fh:
        return json.load(fh)


def frames(name: str) -> list[bytes]:
    """The AWS event stream frames of an ``events`` example, one per event."""
    return [eventstream.event(kind, payload) for kind, payload in load(name)["response"]["events"]]


def reply(name: str, **overrides: Any) -> Reply:
    response = load(name)["response"]
    fields: dict[str, Any] = {"status": response["status"], "headers": dict(response["headers"])}
    if "events" in response:
        fields["chunks"] = frames(name)
    elif "sse" in response:
        fields["chunks"] = [event + "\n\n" for event in response["sse"].split("\n\n") if event]
        fields["chunks"] = [c.encode() for c in fields["chunks"]]
    else:
        fields["body"] = json.dumps(response["body"]).encode()
    fields.update(overrides)
    return Reply(**fields)
