"""BedrockSigner: which unified requests it signs, for which region, and the 401 when it cannot."""

from __future__ import annotations

import json

import pytest
from mitmproxy.test import taddons, tflow

from addon import metadata as md
from addon.unified.bedrock_sigv4 import BedrockSigner, _region_of


def unified_flow(host: str = "bedrock-runtime.eu-west-1.amazonaws.com", **headers: str) -> tflow.HTTPFlow:
    flow = tflow.tflow()
    flow.request.scheme, flow.request.host, flow.request.port = "https", host, 443
    flow.request.path = "/model/m%3A0/converse"
    flow.request.headers.clear()
    flow.request.headers.update({"content-type": "application/json", **headers})
    flow.request.content = b'{"messages": []}'
    flow.metadata[md.UNIFIED] = {"translate": "bedrock"}
    return flow


@pytest.fixture
def aws_env(monkeypatch, tmp_path) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
                        "AWS_CONFIG_FILE": str(tmp_path / "none"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)


def test_region_from_the_upstream_host() -> None:
    assert _region_of("bedrock-runtime.eu-west-1.amazonaws.com") == "eu-west-1"
    assert _region_of("bedrock-runtime-fips.us-east-1.amazonaws.com:443") == "us-east-1"
    assert _region_of("127.0.0.1:8080") is None


async def test_signs_for_the_hosts_region_and_leaves_api_keys_alone(aws_env) -> None:
    signer = BedrockSigner()
    with taddons.context(signer) as tctx:
        tctx.configure(signer, corral_unified_bedrock_sigv4=True)
        flow = unified_flow()
        await signer.request(flow)
        assert flow.request.headers["authorization"].startswith(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") and "/eu-west-1/bedrock/aws4_request" in \
            flow.request.headers["authorization"]
        assert "x-amz-date" in flow.request.headers and "x-amz-security-token" not in flow.request.headers
        keyed = unified_flow(authorization="Bearer ABSK-key")
        await signer.request(keyed)
        assert keyed.request.headers["authorization"] == "Bearer ABSK-key"
        other = unified_flow()
        other.metadata[md.UNIFIED] = {"translate": "anthropic"}
        await signer.request(other)
        assert "authorization" not in other.request.headers


async def test_off_by_default_and_a_401_without_a_region(aws_env) -> None:
    signer = BedrockSigner()
    with taddons.context(signer) as tctx:
        flow = unified_flow()
        await signer.request(flow)
        assert "authorization" not in flow.request.headers and flow.response is None
        tctx.configure(signer, corral_unified_bedrock_sigv4=True)
        local = unified_flow(host="127.0.0.1")
        await signer.request(local)
        assert local.response is not None and local.response.status_code == 401
        message = json.loads(local.response.content or b"")["error"]["message"]
        assert message == ("corral: [unified] bedrock_sigv4 is on but the gateway found no AWS region "
                           "([unified] bedrock_region) to sign with")
