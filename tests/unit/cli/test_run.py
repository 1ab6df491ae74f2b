"""Unit tests of `corral run`'s pieces: the client environment, the "what did it ignore" guess, the
/_corral/flows counter and the local-capture availability check."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mitmproxy.test import taddons, tflow

from addon import ca, client_env, local_capture, metadata as md
from addon.cli.run import ignored_variable
from addon.flow_count import FlowCounter


def test_variables_cover_every_runtime(tmp_path: Path) -> None:
    files = ca.ensure_ca(tmp_path / "certs")
    env = client_env.variables(files, "http://127.0.0.1:8080", {"NODE_OPTIONS": "--max-old-space-size=512",
                                                                "JAVA_TOOL_OPTIONS": "-Xmx1g"})
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY", "all_proxy"):
        assert env[name] == "http://127.0.0.1:8080"
    assert "127.0.0.1" in env["NO_PROXY"].split(",")
    for name in client_env.BUNDLE_NAMES:  # variables that replace the trust store get the whole bundle
        assert env[name] == str(files.bundle)
    assert env["NODE_EXTRA_CA_CERTS"] == str(files.cert)  # adds to Node's store: the CA alone
    assert env["NODE_OPTIONS"] == f"--require {client_env.NODE_PRELOAD} --max-old-space-size=512"
    java = env["JAVA_TOOL_OPTIONS"].split()
    assert java[0] == "-Xmx1g" and "-Dhttps.proxyHost=127.0.0.1" in java and "-Dhttps.proxyPort=8080" in java
    store = tmp_path / "certs" / client_env.JAVA_TRUSTSTORE
    assert f"-Djavax.net.ssl.trustStore={store}" in java and store.stat().st_size > 10_000


def test_preload_added_once_and_quoted() -> None:
    once = client_env.node_options("")
    assert client_env.node_options(once) == once
    assert client_env.node_options("--inspect") == f"--require {client_env.NODE_PRELOAD} --inspect"


def test_capture_gets_trust_but_no_proxy(tmp_path: Path) -> None:
    env = client_env.variables(ca.ensure_ca(tmp_path / "certs"), None, {}, java=False)
    assert "HTTPS_PROXY" not in env and "NODE_OPTIONS" not in env and "JAVA_TOOL_OPTIONS" not in env
    assert env["SSL_CERT_FILE"].endswith(ca.BUNDLE_NAME)


def test_java_options_replace_their_own_properties() -> None:
    out = client_env.java_options("-Dhttps.proxyHost=old -Xss1m", "http://u:p@[::1]:9000", None)
    assert out.split() == ["-Xss1m", "-Dhttp.proxyHost=[::1]", "-Dhttp.proxyPort=9000", "-Dhttps.proxyHost=[::1]",
                           "-Dhttps.proxyPort=9000", "-Dhttp.nonProxyHosts=localhost|127.0.0.1|[::1]"]


@pytest.mark.parametrize("command,expected", [
    (["node", "app.js"], "NODE_OPTIONS"),
    (["npx", "tsx", "main.ts"], "NODE_OPTIONS"),
    (["env", "-u", "NODE_OPTIONS", "node", "x.mjs"], "NODE_OPTIONS"),
    (["java", "-jar", "app.jar"], "JAVA_TOOL_OPTIONS"),
    (["./gradlew", "run"], "JAVA_TOOL_OPTIONS"),
    (["python3", "agent.py"], "trust_env=False"),
    (["uv", "run", "agent.py"], "trust_env=False"),
    (["./my-go-binary"], "HTTPS_PROXY"),
])
def test_ignored_variable_guess(command: list[str], expected: str) -> None:
    assert expected in ignored_variable(command)


def test_flow_counter_counts_provider_requests_and_answers_loopback_only() -> None:
    counter = FlowCounter()
    with taddons.context(counter):
        for meta in ({md.PROVIDER: "openai"}, {}, {md.PROVIDER: "anthropic"}):
            flow = tflow.tflow()
            flow.metadata.update(meta)
            counter.requestheaders(flow)
        ask = tflow.tflow()
        ask.metadata[md.INTERNAL] = "/flows"
        ask.client_conn.peername = ("127.0.0.1", 5555)
        counter.requestheaders(ask)
        assert ask.response.status_code == 200 and json.loads(ask.response.content)["seen"] == 2
        outside = tflow.tflow()
        outside.metadata[md.INTERNAL] = "/flows"
        outside.client_conn.peername = ("192.0.2.7", 5555)
        counter.requestheaders(outside)
        assert outside.response.status_code == 403
        assert counter.seen == 2


def test_capture_unavailable_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_capture.sys, "platform", "linux")
    monkeypatch.setattr(local_capture.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(local_capture.shutil, "which", lambda name: None)
    assert "not root and sudo is not installed" in local_capture.unavailable()
    monkeypatch.setattr(local_capture.os, "geteuid", lambda: 0)
    monkeypatch.setattr(local_capture, "cgroup2_mount", lambda: None)
    assert "no cgroup2" in local_capture.unavailable()
    monkeypatch.setattr(local_capture.sys, "platform", "freebsd14")
    assert "no local capture mode on freebsd14" in local_capture.unavailable()


def test_preload_parses_proxy_and_no_proxy(tmp_path: Path) -> None:
    """The preload's NO_PROXY matching, run in node against a proxy that refuses everything: an exempt
    origin is reached directly, any other fails at the proxy."""
    import shutil

    if not shutil.which("node"):
        pytest.skip("node is not installed")
    script = tmp_path / "t.mjs"
    script.write_text("""
import http from "node:http";
const server = http.createServer((req, res) => res.end("direct")).listen(0, "127.0.0.1", async () => {
  const url = `http://127.0.0.1:${server.address().port}/`;
  const out = [];
  for (const target of [url, url.replace("127.0.0.1", "localhost")]) {
    try { out.push(await (await fetch(target)).text()); } catch (e) { out.push("failed"); }
  }
  console.log(JSON.stringify(out));
  server.close();
});
""")
    env = {"HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ".example.test,127.0.0.1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["node", "--require", str(client_env.NODE_PRELOAD), str(script)], env=env,
                          capture_output=True, text=True, timeout=30)
    assert json.loads(proc.stdout) == ["direct", "failed"], proc.stderr


def test_only_the_process_owner_may_capture_it() -> None:
    """The uid of the asking socket comes from /proc/net/tcp: a real loopback connection here."""
    import os
    import socket
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("Linux: /proc/net/tcp")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            flow = tflow.tflow()
            flow.client_conn.peername = client.getsockname()
            flow.client_conn.sockname = server.getsockname()
            assert local_capture.socket_uid(client.getsockname()[1], server.getsockname()[1]) == os.geteuid()
            assert local_capture.may_capture(flow, os.getpid()) is None
            assert local_capture.may_capture(flow, 2**22 + 7) == f"no process {2**22 + 7}"
            if os.geteuid() != 0:
                assert local_capture.may_capture(flow, 1) == "process 1 belongs to another user"
            flow.client_conn.peername = ("127.0.0.1", 1)  # no such socket: refused, not assumed
            assert local_capture.may_capture(flow, os.getpid()) == "cannot tell which user is asking"
