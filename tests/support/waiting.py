"""Waiting for a condition instead of for time: poll it, return as soon as it holds.

``until(condition)`` calls ``condition()`` until it returns something truthy and returns that value;
after ``timeout`` seconds it fails the test with ``message``. The timeout is a safety net for a
condition that never comes, never the expected duration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def until[T](condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, message: str = "") -> T:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, message or f"condition not met within {timeout:g} s"
        time.sleep(interval)
    return value


async def until_async[T](condition: Callable[[], T], give_up_after: float = 10.0, interval: float = 0.001,
                         message: str = "") -> T:
    """``until`` for a test on an event loop: the loop keeps running while it waits."""
    deadline = time.monotonic() + give_up_after
    while not (value := condition()):
        assert time.monotonic() < deadline, message or f"condition not met within {give_up_after:g} s"
        await asyncio.sleep(interval)
    return value
