"""Cost of a gateway key check on the hot path: find the key in the request and verify it from the cache.

    .venv/bin/python -m bench.keys_check
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from mitmproxy import http

from addon.keys import store
from addon.keys.book import KeyBook
from addon.keys.check import presented_key

KEY = "ck-0123abcd_" + "s" * 43


async def main(n: int = 100_000) -> None:
    book = KeyBook()
    record = store.KeyRecord("0123abcd", "app", None, None, None, None, None, None)
    book._verified[hashlib.sha256(KEY.encode()).digest()] = (time.monotonic() + 1e9, record)
    request = http.Request.make("POST", "https://x/v1/chat/completions", b"{}", {
        "authorization": f"Bearer {KEY}", "content-type": "application/json", "user-agent": "OpenAI/Python"})
    start = time.perf_counter()
    for _ in range(n):
        token = presented_key(request)
        assert token is not None and await book.verify(token) is record
    print(f"presented_key + cached verify: {(time.perf_counter() - start) / n * 1e6:.2f} µs per request")
    book.done()


if __name__ == "__main__":
    asyncio.run(main())
