"""CPU the gateway process spends per request with [telemetry] on (spans to a loopback OTLP collector)
and off: ``python -m bench.telemetry_overhead [requests] [rounds]``.

Same gateway, same recorded JSON answer from the corpus mock, one keep-alive httpx client; the gateway's
own user+system CPU time (/proc/PID/stat) over the loop, divided by the requests. Rounds alternate
off/on so a busy machine shifts both alike. With telemetry on, the CPU is read once the collector
has every span, so the export thread's encoding and sending are counted too.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream
from tests.support.otlp_collector import OTLPCollector
from tests.support.waiting import until

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20, "temperature": 0}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(mock: MockUpstream, collector: OTLPCollector, telemetry: bool, requests: int) -> float:
    config = {"telemetry": {"otlp_endpoint": collector.url}} if telemetry else {}
    gw = Gateway(mock.url, config=config, workdir=Path(tempfile.mkdtemp(prefix="corral-bench-otel-")))
    gw.start()  # the SDK's default batching: an export every 5 s
    try:
        assert gw.proc is not None
        headers = {"authorization": "Bearer sk-x", "x-mock-exchange": "openai-chat-json-2"}
        with httpx.Client(base_url=gw.base("openai/v1"), headers=headers) as client:
            for _ in range(20):  # warm-up: imports, connections, first rows
                client.post("/chat/completions", json=BODY).raise_for_status()
            before = cpu_seconds(gw.proc.pid)
            expected = len(collector.spans) + requests + 20
            for _ in range(requests):
                client.post("/chat/completions", json=BODY).raise_for_status()
            if telemetry:  # the export thread's work counts too: wait until every span arrived
                until(lambda: len(collector.spans) >= expected, timeout=30)
            after = cpu_seconds(gw.proc.pid)
    finally:
        gw.stop()
    return (after - before) * 1000 / requests


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    off: list[float] = []
    on: list[float] = []
    with MockUpstream() as mock, OTLPCollector() as collector:
        mock.chunk_delay = 0
        for _ in range(rounds):
            off.append(run(mock, collector, False, requests))
            on.append(run(mock, collector, True, requests))
        spans = len(collector.spans)
    print(f"{requests} requests x {rounds} rounds; gateway CPU ms/request (median of rounds)")
    print(f"  telemetry off: {statistics.median(off):.3f}  ({', '.join(f'{x:.3f}' for x in off)})")
    print(f"  telemetry on:  {statistics.median(on):.3f}  ({', '.join(f'{x:.3f}' for x in on)})")
    print(f"  difference:    {statistics.median(on) - statistics.median(off):+.3f} ms/request; "
          f"spans received by the collector: {spans}")


if __name__ == "__main__":
    main()
