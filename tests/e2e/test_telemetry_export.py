"""[telemetry]'s way out: OTLP/gRPC, the GenAI metrics, and a collector that is down or hangs, which
must cost the clients nothing. The receivers are tests/support/otlp_collector.py's."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.gateway import Gateway, free_port
from tests.support.mock_upstream import MockUpstream
from tests.support.otlp_collector import OTLPCollector, OTLPGrpcCollector, split, traceparent
from tests.support.reliability import reliability
from tests.support.waiting import until


@pytest.fixture(scope="module")
def collector() -> Iterator[OTLPCollector]:
    with OTLPCollector() as c:
        yield c


def client(gw: Gateway, tag: str, header: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base("openai/v1"), api_key="sk-test-telemetry", max_retries=0,
                         default_headers={"x-test-id": tag, "traceparent": header})


@reliability("upstream faults", "OTLP collector down", "answers unchanged, no error",
             "rows as usual; spans dropped and counted (corral_telemetry_spans_dropped_total)")
def test_collector_down_costs_clients_nothing_and_drops_are_counted(
    mock: MockUpstream, fresh_mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    viewer_port = free_port()
    config = {"telemetry": {"otlp_endpoint": f"http://127.0.0.1:{free_port()}", "queue_size": 2},  # nothing there
              "viewer": {"listen": f"127.0.0.1:{viewer_port}"}}
    gw = Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("telemetry-down"))
    gw.start(env={**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_EXPORTER_OTLP_TIMEOUT": "1"})
    try:
        sdk = openai.OpenAI(base_url=gw.base("openai/v1"), api_key="sk-x", max_retries=0)
        for _ in range(6):
            fresh_mock.enqueue("openai-chat-json-1")
            answer = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
            assert answer.choices[0].message is not None
        assert len(gw.wait_rows(lambda r: r["status"] == 200, count=6)) == 6

        def dropped() -> float:
            text = httpx.get(f"http://127.0.0.1:{viewer_port}/metrics").text
            line = next((ln for ln in text.splitlines() if ln.startswith("corral_telemetry_spans_dropped_total")), "")
            value = float(line.split()[-1]) if line else 0.0
            return value if value >= 12 else 0.0

        # Every span (the flow's and its upstream attempt's): pushed out of the full queue, or refused.
        assert until(dropped, timeout=20) == 12
        assert "Traceback" not in gw.log()
    finally:
        gw.stop()
    assert json.dumps(gw.log()).count("dropping until it does") >= 1  # one warning per outage, not per span


@reliability("upstream faults", "OTLP collector hangs (accepts, never answers)", "answers unchanged, not delayed",
             "the exporter waits in its own thread; the spans leave once the collector answers")
def test_a_hanging_collector_delays_no_request(
    mock: MockUpstream, fresh_mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory, tag: str
) -> None:
    with OTLPCollector() as hung:
        hung.stall = threading.Event()
        config = {"telemetry": {"otlp_endpoint": hung.url}}
        gw = Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("telemetry-hung"))
        # The exporter would wait 60 s for an answer: far longer than the client below waits for one.
        gw.start(env={**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_EXPORTER_OTLP_TIMEOUT": "60"})
        try:
            sdk = openai.OpenAI(base_url=gw.base("openai/v1"), api_key="sk-x", max_retries=0, timeout=20,
                                default_headers={"x-test-id": tag})
            fresh_mock.enqueue("openai-chat-json-1")
            trace_id, _, header = traceparent()
            first = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "1"}],
                                                extra_headers={"traceparent": header})
            until(lambda: hung.stalled >= 1, message="the exporter never reached the collector")
            for i in range(5):  # the export thread is stuck on the first batch now
                fresh_mock.enqueue("openai-chat-json-1")
                answer = sdk.chat.completions.create(model="gpt-4o-mini",
                                                     messages=[{"role": "user", "content": f"{i}"}])
                assert answer.id == first.id  # the recorded answer, unchanged
            assert len(gw.wait_rows(lambda r: tag in (r.get("request_headers") or ""), count=6)) == 6
            hung.stall.set()  # the collector answers: the spans held back leave
            span, _ = split(hung.trace(trace_id))
            assert span["attributes"]["gen_ai.response.id"] == first.id
        finally:
            hung.stall.set()
            gw.stop()


def test_genai_metrics_over_otlp(
    mock: MockUpstream, fresh_mock: MockUpstream, collector: OTLPCollector, tmp_path_factory: pytest.TempPathFactory,
    tag: str,
) -> None:
    config = {"telemetry": {"otlp_endpoint": collector.url, "metrics": True}}
    gw = Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("telemetry-metrics"))
    gw.start(env={**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_METRIC_EXPORT_INTERVAL": "100"})
    try:
        fresh_mock.enqueue("openai-chat-json-2")
        answer = client(gw, tag, traceparent()[2]).chat.completions.create(
            model=f"gpt-4o-mini-{tag}", messages=[{"role": "user", "content": "metrics?"}])
        row = gw.row_for(tag)

        def points(name: str) -> list[dict]:
            return [p for p in list(collector.metrics)
                    if p["name"] == name and p["attributes"].get("gen_ai.request.model") == f"gpt-4o-mini-{tag}"]

        def latest_by_type() -> dict[str, dict]:
            found = {p["attributes"]["gen_ai.token.type"]: p for p in points("gen_ai.client.token.usage")}
            return found if len(found) == 2 else {}

        by_type = until(latest_by_type)
        duration = until(lambda: points("gen_ai.client.operation.duration")[-1:])
    finally:
        gw.stop()
    assert by_type["input"]["sum"] == row["input_tokens"] == answer.usage.prompt_tokens
    assert by_type["output"]["sum"] == row["output_tokens"] == answer.usage.completion_tokens
    assert by_type["input"]["unit"] == "{token}" and duration[0]["unit"] == "s"
    attributes = duration[0]["attributes"]
    assert attributes["gen_ai.operation.name"] == "chat" and attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.response.model"] == row["model"] and "error.type" not in attributes
    assert duration[0]["count"] == 1
    assert duration[0]["sum"] * 1000 == pytest.approx(row["duration_ms"], abs=0.01)


def test_grpc_export_of_spans_and_metrics(
    mock: MockUpstream, fresh_mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory, tag: str
) -> None:
    with OTLPGrpcCollector() as grpc_collector:
        config = {"telemetry": {"otlp_endpoint": grpc_collector.url, "protocol": "grpc", "metrics": True},
                  "telemetry.headers": {"x-collector-token": "t0k"}}
        gw = Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("telemetry-grpc"))
        gw.start(env={**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_METRIC_EXPORT_INTERVAL": "100"})
        try:
            fresh_mock.enqueue("openai-chat-json-1")
            trace_id, parent, header = traceparent()
            answer = client(gw, tag, header).chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Dragons over gRPC?"}])
            row = gw.row_for(tag)
            span, children = split(grpc_collector.trace(trace_id))

            def tokens() -> dict[str, dict]:
                points = {p["attributes"]["gen_ai.token.type"]: p for p in list(grpc_collector.metrics)
                          if p["name"] == "gen_ai.client.token.usage"}
                return points if len(points) == 2 else {}

            by_type = until(tokens)
        finally:
            gw.stop()
    assert span["parent_span_id"] == parent and span["name"] == "chat gpt-4o-mini"
    a = span["attributes"]
    assert a["gen_ai.response.id"] == answer.id
    assert a["gen_ai.usage.input_tokens"] == row["input_tokens"] == by_type["input"]["sum"]
    assert a["gen_ai.usage.output_tokens"] == row["output_tokens"] == by_type["output"]["sum"]
    assert by_type["input"]["attributes"]["gen_ai.provider.name"] == "openai"
    assert by_type["input"]["attributes"]["gen_ai.response.model"] == row["model"]
    [attempt] = children["POST"]
    assert attempt["attributes"]["http.response.status_code"] == 200
    assert grpc_collector.requests[0]["x-collector-token"] == "t0k"  # gRPC metadata
