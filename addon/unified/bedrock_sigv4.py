"""BedrockSigner: ``[unified] bedrock_sigv4 = true`` signs a unified request translated to Bedrock with
the gateway's own AWS credentials (AWS SigV4, botocore's signer and credential chain: environment,
shared files, SSO, instance roles), for accounts without Bedrock API keys.

A request that already carries a key (a configured or forwarded Bedrock API key, as a bearer token) is
left alone. Signing happens after the cache and the limits (a hit needs no signature) and before the
Retrier sends it, on the final native body and upstream host; retries reuse the signature, which AWS
accepts for five minutes. botocore is optional: the setting is refused at startup without it.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from mitmproxy import ctx, exceptions, http

from addon import metadata as md
from addon.unified.errors import openai_error_bytes

_REGION_IN_HOST = re.compile(r"^bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com$")
# What the signature covers besides the host: the rest of the headers may change on the way (the relay's).
_SIGNED = ("content-type",)


class BedrockSigner:
    def __init__(self) -> None:
        self.session: Any = None  # a botocore Session while signing is on
        self.credentials: Any = None

    def load(self, loader) -> None:
        loader.add_option(
            "corral_unified_bedrock_sigv4", bool, False,
            "The unified /v1/chat/completions: sign requests to Bedrock with the gateway's AWS credentials "
            "(SigV4, botocore's credential chain) when no Bedrock API key is sent. Needs botocore.",
        )
        loader.add_option(
            "corral_unified_bedrock_region", str, "",
            "The unified /v1/chat/completions: the AWS region Bedrock requests are signed for; default: the one "
            "in the Bedrock upstream's host name, else the AWS configuration's (AWS_REGION).",
        )

    def configure(self, updated: set[str]) -> None:
        if "corral_unified_bedrock_sigv4" not in updated:
            return
        self.session = self.credentials = None
        if not ctx.options.corral_unified_bedrock_sigv4:
            return
        try:
            import botocore.session
        except ImportError:
            raise exceptions.OptionsError(
                "[unified] bedrock_sigv4 needs botocore (pip install 'corral[bedrock]'), or use a Bedrock API key "
                "([unified] keys = { bedrock = \"env:AWS_BEARER_TOKEN_BEDROCK\" })") from None
        self.session = botocore.session.Session()

    async def request(self, flow: http.HTTPFlow) -> None:
        if self.session is None or flow.response is not None or md.unified_translated(flow) != "bedrock":
            return
        req = flow.request
        if "authorization" in req.headers:
            return  # a Bedrock API key travels as a bearer token: nothing to sign
        # The credential chain may refresh over the network (SSO, instance roles): off the loop.
        credentials = await asyncio.to_thread(self._frozen_credentials)
        host = req.host_header or req.host
        region = ctx.options.corral_unified_bedrock_region or _region_of(host) or self.session.get_config_variable(
            "region")
        if credentials is None or not region:
            missing = "AWS credentials" if credentials is None else "AWS region ([unified] bedrock_region)"
            message = f"corral: [unified] bedrock_sigv4 is on but the gateway found no {missing} to sign with"
            flow.metadata[md.GATEWAY_ERROR] = message
            flow.response = http.Response.make(401, openai_error_bytes(message, "authentication_error"),
                                               {"content-type": "application/json"})
            return
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        headers = {name: req.headers[name] for name in _SIGNED if name in req.headers}
        signed = AWSRequest(method=req.method, url=f"{req.scheme}://{host}{req.path}", data=req.raw_content or b"",
                            headers=headers)
        SigV4Auth(credentials, "bedrock", region).add_auth(signed)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in signed.headers:
                req.headers[name.lower()] = signed.headers[name]
        flow.metadata.setdefault(md.CHANGES, []).append(f"unified endpoint: signed for Bedrock (SigV4, {region})")

    def _frozen_credentials(self) -> Any:
        if self.credentials is None:
            self.credentials = self.session.get_credentials()
        return self.credentials.get_frozen_credentials() if self.credentials is not None else None


def _region_of(host: str) -> str | None:
    m = _REGION_IN_HOST.match(host.rsplit(":", 1)[0] if host.endswith(":443") else host)
    return m.group(1) if m else None
