"""Adaptive holds read Retry-After exactly as the retrier does (one reader: relay/policy.py)."""

from __future__ import annotations

import pytest

from addon.limits.adaptive import MAX_HOLD, hold_seconds
from addon.relay.policy import retry_after_seconds


@pytest.mark.parametrize("headers", [
    {"retry-after": "4"},
    {"retry-after-ms": "250", "retry-after": "1"},
    {"x-ms-retry-after-ms": "1500"},  # Azure's header counts for holds too
    {"retry-after-ms": "soon", "retry-after": "2"},  # an unreadable ms header falls back to retry-after
    {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"},  # a date in the past: no wait
])
def test_hold_and_retry_wait_agree(headers: dict[str, str]) -> None:
    now = 1_700_000_000.0
    expected = retry_after_seconds(headers, now)
    assert (hold_seconds(list(headers.items()), 429, now) or None) == (expected or None)  # 0: no hold


def test_a_huge_retry_after_is_capped() -> None:
    assert hold_seconds([("retry-after", str(10 * MAX_HOLD))], 503) == MAX_HOLD
