"""Copy as curl: the recorded request as a command that goes through the gateway, run by a real shell
(bash -c, curl swapped for a stand-in that prints its arguments): no secret in it, the key from the
user's environment, quotes in bodies kept intact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from mitmproxy.test import taddons

from addon.viewer.curl import curl_command, gateway_address

FLOW = {
    "method": "POST", "provider": "openai", "stream": True, "gateway_path": "/openai/v1/chat/completions",
    "upstream": "https://api.openai.com", "host": "api.openai.com", "path": "/v1/chat/completions",
    "request_headers": [["Host", "127.0.0.1:8080"], ["authorization", "fp_0123456789ab"],
                        ["content-type", "application/json"], ["cookie", "fp_ba9876543210"],
                        ["x-corral-cache", "use"], ["content-length", "42"], ["accept-encoding", "gzip, br"]],
    "request_body": json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "it's $HOME `id`"}]}),
}


def run(command: str, tmp_path: Path) -> list[str]:
    """The argv curl would get from ``command``, through bash with OPENAI_API_KEY set."""
    fake = tmp_path / "curl"
    fake.write_text("#!/usr/bin/env python3\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "OPENAI_API_KEY": "sk-from-the-shell"}
    out = subprocess.run([shutil.which("bash") or "/bin/bash", "-c", command], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_reverse_path_through_the_gateway_with_the_key_from_the_shell(tmp_path: Path) -> None:
    with taddons.context() as tctx:
        tctx.configure(tctx.master.addons, listen_host="127.0.0.1", listen_port=9090)
        command = curl_command(FLOW, gateway_address("viewer.example"))
    assert "fp_" not in command
    argv = run(command, tmp_path)
    assert argv[:4] == ["-X", "POST", "http://127.0.0.1:9090/openai/v1/chat/completions", "-N"]
    headers = [argv[i + 1] for i, a in enumerate(argv) if a == "-H"]
    assert headers == ["authorization: Bearer sk-from-the-shell", "content-type: application/json",
                       "x-corral-cache: use"]  # Host, cookie and framing are curl's and the gateway's business
    assert argv[argv.index("--data-raw") + 1] == FLOW["request_body"]  # $HOME and `id` not expanded
    assert "--compressed" in argv  # the client accepted compressed answers: curl decodes them


@pytest.mark.parametrize(("listen_host", "viewer_host", "expected"), [
    ("", "corral.example", ("corral.example", 8080)),
    ("0.0.0.0", "[::1]", ("::1", 8080)),
    ("10.1.2.3", "corral.example", ("10.1.2.3", 8080)),
])
def test_a_wildcard_listener_is_reached_by_the_name_the_viewer_was(listen_host, viewer_host, expected) -> None:
    with taddons.context() as tctx:
        tctx.configure(tctx.master.addons, listen_host=listen_host)
        assert gateway_address(viewer_host) == expected


def test_without_a_reverse_path_it_uses_the_gateway_as_explicit_proxy(tmp_path: Path) -> None:
    flow = {**FLOW, "gateway_path": None, "provider": "bedrock", "upstream": "https://bedrock-runtime.us-east-1.amazonaws.com",
            "path": "/model/m/converse", "request_headers": [["authorization", "fp_0123456789ab"]], "stream": False}
    with taddons.context() as tctx:
        tctx.configure(tctx.master.addons, listen_host="127.0.0.1", listen_port=9090, confdir=str(tmp_path))
        argv = run(curl_command(flow, gateway_address("x")), tmp_path)
    assert argv[:6] == ["-X", "POST", "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse",
                        "--proxy", "http://127.0.0.1:9090", "--cacert"]
    assert argv[6] == str(tmp_path / "mitmproxy-ca-cert.pem")
    assert argv[argv.index("-H") + 1] == "authorization: Bearer "  # no BEDROCK_API_KEY set: empty, never a secret
