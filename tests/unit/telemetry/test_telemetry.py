"""[telemetry] in process: off costs no import, options are checked, flows map to GenAI attributes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow
from prometheus_client import CollectorRegistry

from addon import metadata as md
from addon.telemetry import attributes as attrs
from addon.telemetry.tracing import Telemetry, parse_headers

OFF_CHECK = """
import sys
from mitmproxy.test import taddons
from addon import chain
c = chain.addon()
with taddons.context(c) as tctx:
    tctx.configure(c, corral_config="-")
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
print("ok")
"""


def test_off_by_default_imports_no_opentelemetry() -> None:
    env = {"PATH": "/usr/bin:/bin"}  # no OTEL_EXPORTER_OTLP_* from the machine
    out = subprocess.run([sys.executable, "-c", OFF_CHECK], capture_output=True, text=True, env=env, cwd=".")
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("settings,message", [
    ({"corral_telemetry_sample_ratio": "2"}, "[telemetry] sample_ratio: expected a number from 0 to 1, got '2'"),
    ({"corral_telemetry_protocol": "zipkin"}, "[telemetry] protocol: expected one of http/protobuf, grpc"),
    ({"corral_telemetry_otlp_endpoint": "collector:4318"}, "[telemetry] otlp_endpoint: expected an http://"),
    ({"corral_telemetry_headers": "novalue"}, "[telemetry] headers: expected a table or key=value pairs"),
])
def test_bad_settings_are_refused_in_one_line(settings: dict, message: str) -> None:
    t = Telemetry(CollectorRegistry())
    with taddons.context(t) as tctx:
        with pytest.raises(exceptions.OptionsError) as caught:
            tctx.configure(t, **settings)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert t.pipeline is None


def test_headers_as_table_or_env_style() -> None:
    assert parse_headers('{"authorization": "Bearer x"}') == {"authorization": "Bearer x"}
    assert parse_headers("a=1, b = 2") == {"a": "1", "b": "2"}
    assert parse_headers("") == {}


@pytest.mark.parametrize("path,op", [
    ("/v1/chat/completions", "chat"), ("/v1/messages", "chat"), ("/v1/responses", "chat"),
    ("/v1/embeddings", "embeddings"), ("/v1/completions", "text_completion"),
    ("/v1beta/models/gemini-2.0-flash:generateContent?key=x", "generate_content"),
])
def test_operation_name_from_the_path(path: str, op: str) -> None:
    assert attrs.operation(path) == op


def test_provider_names_follow_the_conventions() -> None:
    assert attrs.provider_name("bedrock") == "aws.bedrock"
    assert attrs.provider_name("gemini") == "gcp.gemini"
    assert attrs.provider_name("openai") == "openai"


def test_corral_error_kind_wins_over_the_status() -> None:
    flow = tflow.tflow(resp=http.Response.make(502, b"{}", {"x-corral-error": "upstream_unavailable"}))
    flow.metadata.update({md.PROVIDER: "openai", md.UPSTREAM: "https://api.openai.com/v1"})
    out = attrs.response_attributes(attrs.record(flow, None, 0, None, capture=False))
    assert out["error.type"] == "upstream_unavailable"
    assert (out["server.address"], out["server.port"]) == ("api.openai.com", 443)
    assert "gen_ai.response.model" not in out  # no response was parsed: the model is only the request's


def test_standard_environment_variables_turn_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9/")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    t = Telemetry(CollectorRegistry())
    with taddons.context(t) as tctx:
        tctx.configure(t, corral_telemetry_sample_ratio="0.5")
        try:
            assert t.pipeline is not None
            assert t.pipeline.settings.service_name == "from-env" and t.pipeline.settings.sample_ratio == 0.5
            exporter = t.pipeline.processor.span_exporter.inner
            assert exporter._endpoint == "http://127.0.0.1:9/v1/traces"  # the SDK read the variables itself
            monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
            tctx.configure(t, corral_telemetry_sample_ratio="1")
            assert t.pipeline is None
        finally:
            if t.pipeline is not None:
                t.pipeline.shutdown(background=False)


def test_grpc_without_its_exporter_is_refused_with_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("opentelemetry.exporter.otlp.proto.grpc")
                        else real(name, *a))
    t = Telemetry(CollectorRegistry())
    with taddons.context(t) as tctx, pytest.raises(exceptions.OptionsError) as caught:
        tctx.configure(t, corral_telemetry_otlp_endpoint="http://127.0.0.1:9", corral_telemetry_protocol="grpc")
    assert str(caught.value) == ("[telemetry] protocol = \"grpc\" needs the OTLP/gRPC exporter: "
                                 "pip install 'corral[otlp-grpc]'")
    assert t.pipeline is None


def test_a_flow_the_shutdown_cuts_ends_its_span_as_such() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.sdk.trace.export import SpanExportResult

    sent: list[ExportTraceServiceRequest] = []

    class Keep:
        def export(self, data: object) -> SpanExportResult:
            sent.append(ExportTraceServiceRequest.FromString(data.SerializePartialToString()))  # type: ignore[attr-defined]
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    t = Telemetry(CollectorRegistry())
    with taddons.context(t) as tctx:
        tctx.configure(t, corral_telemetry_otlp_endpoint="http://127.0.0.1:9")
        t.pipeline.processor.span_exporter.inner = Keep()
        flow = tflow.tflow()
        flow.request.path = "/v1/chat/completions"
        flow.metadata.update({md.PROVIDER: "anthropic", md.MODEL: "claude"})
        t.requestheaders(flow)
        t.request(flow)
        t.done()
    [span] = [s for r in sent for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    values = {kv.key: kv.value for kv in span.attributes}
    assert span.name == "chat claude" and values["gen_ai.provider.name"].string_value == "anthropic"
    assert values["error.type"].string_value == "gateway_shutdown" and span.status.code == 2
