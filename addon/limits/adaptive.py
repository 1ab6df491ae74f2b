"""Adaptive limits: read the provider's own rate-limit headers and say how long to hold new requests.

Understood headers (any response from upstream, streams included, as soon as headers arrive):
- OpenAI-style (OpenAI, Groq, Mistral, ...): ``x-ratelimit-remaining-<what>`` with ``x-ratelimit-reset-<what>``
  (a duration such as ``1s``, ``6m0s``, ``20ms``, or seconds);
- Anthropic: ``anthropic-ratelimit-<what>-remaining`` with ``anthropic-ratelimit-<what>-reset`` (RFC 3339 time);
- on an error status, ``retry-after-ms`` / ``x-ms-retry-after-ms`` or ``retry-after`` (seconds or an HTTP
  date), read as the retrier reads them (addon/relay/policy.py).
When a remaining count is 0 (or a retry-after is given), the provider+credential is held until the reset.
"""

from __future__ import annotations

import datetime
import email.utils
import re
import time
from collections.abc import Iterable

from addon.relay.policy import retry_after_seconds

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_HOLD = 24 * 3600.0  # a nonsense reset must not park a provider for ever


def parse_reset(value: str, now: float | None = None) -> float | None:
    """Seconds from now until ``value`` (a duration, plain seconds, RFC 3339 or HTTP date); None if unreadable."""
    value = value.strip()
    now = time.time() if now is None else now
    if not value:
        return None
    try:
        return min(MAX_HOLD, max(0.0, float(value)))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:
        return min(MAX_HOLD, sum(float(n) * _UNITS[u] for n, u in parts))
    try:
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return min(MAX_HOLD, max(0.0, when.timestamp() - now))


def _exhausted(value: str) -> bool:
    try:
        return float(value.strip()) <= 0
    except ValueError:
        return False


def hold_seconds(headers: Iterable[tuple[str, str]], status: int, now: float | None = None) -> float | None:
    """How long the provider asks us to wait before the next request; None when it does not."""
    found = {name.lower(): value for name, value in headers}
    holds: list[float] = []
    for name, value in found.items():
        reset_name = None
        if name.startswith("x-ratelimit-remaining-"):
            reset_name = "x-ratelimit-reset-" + name.removeprefix("x-ratelimit-remaining-")
        elif name.startswith("anthropic-ratelimit-") and name.endswith("-remaining"):
            reset_name = name.removesuffix("-remaining") + "-reset"
        if reset_name and _exhausted(value) and reset_name in found:
            seconds = parse_reset(found[reset_name], now)
            if seconds is not None:
                holds.append(seconds)
    if status >= 400:
        seconds = retry_after_seconds(found, now)  # the same reading the retrier gives it
        if seconds is not None:
            holds.append(min(MAX_HOLD, seconds))
    return max(holds) if holds else None
