"""/metrics stays bounded whatever model names clients send: distinct values per label are capped."""

from __future__ import annotations

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow
from prometheus_client import CollectorRegistry

from addon import metadata as md
from addon.viewer.metrics import Metrics, exposition
from tests.support.reliability import reliability


def _flow(model: str) -> tflow.HTTPFlow:
    flow = tflow.tflow(resp=True)
    flow.metadata.update({md.PROVIDER: "openai", md.MODEL: model, md.USAGE: {"input_tokens": 3}})
    return flow


@reliability("bad client input", "thousands of distinct model names (Prometheus label cardinality)",
             "-", "/metrics keeps [metrics] max_label_values per label (default 200), the rest as model=\"other\"")
def test_distinct_model_names_are_capped() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    with taddons.context(metrics) as tctx:
        tctx.configure(metrics, corral_metrics_max_label_values=20)
        for i in range(500):
            metrics.response(_flow(f"model-{i}-" + "x" * 300))
        text = exposition(registry)[0].decode()
    models = {line.split('model="')[1].split('"')[0] for line in text.splitlines() if 'model="' in line}
    assert len(models) == 21 and "other" in models
    assert all(len(m) <= 128 for m in models)
    assert 'corral_requests_total{cache="off",model="other",provider="openai",status_class="2xx"} 480.0' in text
    assert len(text) < 60_000


def test_the_default_cap_and_its_check() -> None:
    metrics = Metrics(CollectorRegistry())
    with taddons.context(metrics) as tctx:
        assert metrics.cap.limit == 200
        with pytest.raises(exceptions.OptionsError, match="max_label_values"):
            tctx.configure(metrics, corral_metrics_max_label_values=0)
