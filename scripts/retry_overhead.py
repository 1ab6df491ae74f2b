"""Happy-path cost of the retry relay: the same requests through a gateway with retries off (plain
mitmproxy pass-through) and one with retries on (routed through the in-process relay), interleaved.

    make venv   # once: httpx comes with the test extra
    .venv/bin/python scripts/retry_overhead.py [--requests 500] [--concurrency 1]

Prints p50/p90/p99 latency per path, the difference, and the gateway process's CPU time per request
(user+sys from /proc; robust on a busy machine where latency percentiles are mostly scheduling noise).
Loopback only (mock upstream).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream, Reply

BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def run(url: str, n: int, concurrency: int, stream: bool) -> tuple[list[float], list[float]]:
    """(total latency ms, time-to-first-body-byte ms) per request."""
    totals: list[float] = []
    firsts: list[float] = []
    body = BODY.replace(b"}]}", b'}],"stream":true,"stream_options":{"include_usage":true}}') if stream else BODY
    async with httpx.AsyncClient(timeout=30) as client:
        async def one() -> None:
            t0 = time.perf_counter()
            async with client.stream("POST", url, content=body, headers={"content-type": "application/json"}) as r:
                first = None
                async for _ in r.aiter_raw():
                    first = first or time.perf_counter()
                assert r.status_code == 200, r.status_code
            t1 = time.perf_counter()
            totals.append((t1 - t0) * 1000)
            firsts.append(((first or t1) - t0) * 1000)

        for _ in range(n // concurrency):
            await asyncio.gather(*(one() for _ in range(concurrency)))
    return totals, firsts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with MockUpstream(chunk_delay=0) as mock:
        off = Gateway(mock.url, config={"retries": {"enabled": False}}).start()
        on = Gateway(mock.url).start()
        try:
            for stream, exchange in ((False, "openai-chat-json-2"), (True, "openai-chat-stream-1")):
                mock.default = Reply.from_exchange(exchange, chunk_delay=0)
                results: dict[str, tuple[list[float], list[float]]] = {
                    "direct": ([], []), "retries off": ([], []), "retries on": ([], [])}
                urls = {"direct": mock.url + "/v1/chat/completions",
                        "retries off": off.base("openai") + "/v1/chat/completions",
                        "retries on": on.base("openai") + "/v1/chat/completions"}
                for url in urls.values():  # warm-up
                    asyncio.run(run(url, 50, args.concurrency, stream))
                per_round = max(1, args.requests // args.rounds)
                pids = {"direct": None, "retries off": off.proc.pid, "retries on": on.proc.pid}
                cpu = dict.fromkeys(urls, 0.0)
                for _ in range(args.rounds):  # interleaved, so drift in machine load hits all alike
                    for name, url in urls.items():
                        before = cpu_seconds(pids[name])
                        t, f = asyncio.run(run(url, per_round, args.concurrency, stream))
                        cpu[name] += cpu_seconds(pids[name]) - before
                        results[name][0].extend(t)
                        results[name][1].extend(f)
                kind = "stream (SSE, 6 chunks)" if stream else "JSON"
                print(f"\n{kind}: {len(results['direct'][0])} requests per path, concurrency {args.concurrency}")
                print(f"{'path':<12} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8} "
                      f"{'first byte p50':>15} {'gateway CPU ms/req':>19}")
                for name, (t, f) in results.items():
                    per = f"{cpu[name] * 1000 / len(t):19.2f}" if pids[name] else f"{'-':>19}"
                    print(f"{name:<12} {pct(t, .5):8.2f} {pct(t, .9):8.2f} {pct(t, .99):8.2f} "
                          f"{statistics.mean(t):8.2f} {pct(f, .5):15.2f} {per}")
                d50 = pct(results["retries on"][0], .5) - pct(results["retries off"][0], .5)
                d90 = pct(results["retries on"][0], .9) - pct(results["retries off"][0], .9)
                print(f"relay overhead (retries on - off): p50 {d50:+.2f} ms, p90 {d90:+.2f} ms")
        finally:
            off.stop()
            on.stop()


if __name__ == "__main__":
    main()
