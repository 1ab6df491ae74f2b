"""CPU the gateway process spends per request with [telemetry] on (spans to a loopback OTLP collector)
and off: ``python -m bench.telemetry_overhead [requests] [rounds]``.

``python -m bench.telemetry_overhead --paired [requests] [rounds]``: both gateways running at once,
each request sent to one then the other, so the load of a shared machine weighs on both alike.

``python -m bench.telemetry_overhead --in-process [flows]``: the telemetry addon alone, in this process:
its hooks for each flow (a recorded JSON call's metadata: one upstream attempt, a cache miss), then the
export thread's work for them (spans built and encoded as the exporter would send them; nothing sent),
as process CPU time per flow. On a busy machine the gateway's whole CPU per request varies by more
than the telemetry costs; this isolates it.

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


def in_process(flows: int) -> None:
    import time

    from mitmproxy import http
    from mitmproxy.test import taddons, tflow
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SpanExportResult
    from prometheus_client import CollectorRegistry

    from addon.telemetry.tracing import Telemetry

    class Encoding:  # the OTLP exporter up to the bytes it would send
        def export(self, data: object) -> SpanExportResult:
            serialize = getattr(data, "SerializePartialToString", None)
            (serialize() if serialize else encode_spans(data).SerializePartialToString())  # type: ignore[arg-type]
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 0) -> bool:
            return True

    def flow() -> http.HTTPFlow:
        now, ns = time.time(), time.time_ns()
        f = tflow.tflow(resp=http.Response.make(200, b"{}", {"content-type": "application/json"}))
        f.request.method, f.request.path = "POST", "/v1/chat/completions"
        f.request.timestamp_start, f.response.timestamp_end = now, now + 0.01
        f.metadata.update({
            "corral.provider": "openai", "corral.mode": "reverse", "corral.upstream": "https://api.openai.com/v1",
            "corral.model": "gpt-4o-mini", "corral.stream_requested": False, "corral.stream": False,
            "corral.request_params": {"max_tokens": 20, "temperature": 0}, "corral.complete": True,
            "corral.usage": {"input_tokens": 10, "output_tokens": 5, "cached_input_tokens": None},
            "corral.finish_reason": "stop", "corral.response_id": "chatcmpl-1", "corral.cost_usd": 0.0001,
            "corral.credential": "fp:abc", "corral.retries": 0, "corral.cache": "miss",
            "corral.attempts": [{"upstream": "https://api.openai.com/v1", "status": 200, "error": None,
                                 "wait_ms": None}],
            "corral.attempt_times": [[ns, ns + 5_000_000]], "corral.cache_lookup_at": [ns, ns + 10_000],
        })
        return f

    t = Telemetry(CollectorRegistry())
    with taddons.context(t) as tctx:
        tctx.configure(t, corral_telemetry_otlp_endpoint="http://127.0.0.1:9", corral_telemetry_queue_size=flows)
        t.pipeline.processor.span_exporter.inner = Encoding()
        batch = [flow() for _ in range(flows)]
        start = time.process_time()
        for f in batch:
            t.requestheaders(f)
            t.request(f)
            t.response(f)
        t.pipeline.processor.force_flush()
        end = time.process_time()
        t.pipeline.shutdown(background=False)
        t.pipeline = None
    # Both threads' CPU: the export thread takes full batches while the hooks still run.
    print(f"{flows} flows: telemetry CPU {(end - start) * 1e6 / flows:.1f} us per flow "
          f"(hooks and export thread); {t.counts.exported} spans encoded")


def flows(collector: OTLPCollector) -> int:
    """Flow spans received (the roots: the requests send no traceparent), children not counted."""
    return sum(1 for s in list(collector.spans) if not s["parent_span_id"])


def paired(requests: int, rounds: int) -> None:
    """Both gateways at once, requests alternating between them: a busy machine slows both alike."""
    with MockUpstream() as mock, OTLPCollector() as collector:
        mock.chunk_delay = 0
        gateways = {}
        for name, config in (("off", {}), ("on", {"telemetry": {"otlp_endpoint": collector.url}})):
            gw = Gateway(mock.url, config=config, workdir=Path(tempfile.mkdtemp(prefix="corral-bench-otel-")))
            gateways[name] = gw.start()
        headers = {"authorization": "Bearer sk-x", "x-mock-exchange": "openai-chat-json-2"}
        clients = {name: httpx.Client(base_url=gw.base("openai/v1"), headers=headers) for name, gw in gateways.items()}
        try:
            for client in clients.values():
                for _ in range(20):
                    client.post("/chat/completions", json=BODY).raise_for_status()
            results: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(rounds):
                before = {name: cpu_seconds(gw.proc.pid) for name, gw in gateways.items()}  # type: ignore[union-attr]
                expected = flows(collector) + requests
                for _ in range(requests):
                    for client in clients.values():
                        client.post("/chat/completions", json=BODY).raise_for_status()
                until(lambda n=expected: flows(collector) >= n, timeout=30)
                for name, gw in gateways.items():
                    results[name].append((cpu_seconds(gw.proc.pid) - before[name]) * 1000 / requests)  # type: ignore[union-attr]
        finally:
            for client in clients.values():
                client.close()
            for gw in gateways.values():
                gw.stop()
    diffs = [on - off for on, off in zip(results["on"], results["off"], strict=True)]
    print(f"{requests} requests x {rounds} rounds, both gateways at once; gateway CPU ms/request")
    print(f"  telemetry off: {', '.join(f'{x:.3f}' for x in results['off'])}")
    print(f"  telemetry on:  {', '.join(f'{x:.3f}' for x in results['on'])}")
    print(f"  difference per round: {', '.join(f'{x:+.3f}' for x in diffs)}; median {statistics.median(diffs):+.3f}")


def main() -> None:
    if sys.argv[1:2] == ["--paired"]:
        paired(int(sys.argv[2]) if len(sys.argv) > 2 else 1000, int(sys.argv[3]) if len(sys.argv) > 3 else 5)
        return
    if sys.argv[1:2] == ["--in-process"]:
        in_process(int(sys.argv[2]) if len(sys.argv) > 2 else 5000)
        return
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
