"""`corral run -- CMD`: unmodified programs in other runtimes captured in explicit mode.

The Node.js `openai` and `@anthropic-ai/sdk` packages call the providers' default hosts with Node's
built-in fetch, which ignores HTTPS_PROXY before Node 24: only Corral's preload (NODE_OPTIONS) sends
them through the gateway, which intercepts those hosts and replays the mock. The packages come from
npm once per machine into a cache directory (tests are skipped, saying why, without node or npm).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import corpus
from tests.support.gateway import CORRAL, REPO_ROOT, Gateway, free_port, new_tag
from tests.support.mock_upstream import MockUpstream

NODE_SDKS = ("openai@6", "@anthropic-ai/sdk@1")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "corral-tests" / "node-sdks"

# Both scripts: argv[2] is JSON [{"body", "headers"}, ...]; one JSON line per call. Nothing in them
# names Corral, a proxy or a CA: the SDK is built exactly as its README shows.
OPENAI_JS = """
import OpenAI from "openai";
const client = new OpenAI({ maxRetries: 0, timeout: 20000 });
for (const { body, headers } of JSON.parse(process.argv[2])) {
  if (body.stream) {
    const stream = await client.chat.completions.create(body, { headers });
    let chunks = 0, text = "";
    for await (const c of stream) { chunks++; text += c.choices[0]?.delta?.content ?? ""; }
    console.log(JSON.stringify({ chunks, text }));
  } else {
    const r = await client.chat.completions.create(body, { headers });
    console.log(JSON.stringify({ usage: r.usage, text: r.choices[0].message.content }));
  }
}
"""

ANTHROPIC_JS = """
import Anthropic from "@anthropic-ai/sdk";
const client = new Anthropic({ maxRetries: 0, timeout: 20000 });
for (const { body, headers } of JSON.parse(process.argv[2])) {
  if (body.stream) {
    const stream = await client.messages.create(body, { headers });
    let events = 0, usage = null;
    for await (const e of stream) { events++; if (e.type === "message_delta") usage = e.usage; }
    console.log(JSON.stringify({ events, usage }));
  } else {
    const r = await client.messages.create(body, { headers });
    console.log(JSON.stringify({ usage: r.usage }));
  }
}
"""


@pytest.fixture(scope="session")
def node_sdks() -> Path:
    """A directory with the npm packages installed (once per machine); its scripts import them."""
    if not shutil.which("node"):
        pytest.skip("node is not installed: the Node.js SDK tests need it")
    if not (CACHE / "node_modules" / "openai").is_dir() or not (CACHE / "node_modules" / "@anthropic-ai").is_dir():
        if not shutil.which("npm"):
            pytest.skip("npm is not installed: cannot fetch the openai and @anthropic-ai/sdk packages")
        CACHE.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", *NODE_SDKS],
                              cwd=CACHE, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            pytest.skip(f"npm install {' '.join(NODE_SDKS)} failed (offline?): {proc.stderr.strip()[-300:]}")
    (CACHE / "openai-test.mjs").write_text(OPENAI_JS)
    (CACHE / "anthropic-test.mjs").write_text(ANTHROPIC_JS)
    return CACHE


def clean_env(**extra: str) -> dict[str, str]:
    """Nothing of the test's own environment but PATH and HOME: what the program gets is corral run's."""
    return {**{k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}, **extra}


def corral_run(gateway: Gateway, command: list[str], env: dict[str, str],
               *options: str) -> subprocess.CompletedProcess[str]:
    argv = [*CORRAL, "run", "--listen", f"127.0.0.1:{gateway.port}", "--config", str(gateway.config_path),
            "--certs", str(gateway.workdir / "certs"), *options, "--", *command]
    env = {**env, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


def node_calls(gateway: Gateway, sdks: Path, script: str, names: list[str], key: dict[str, str], trim=None):
    """Run ``script`` under `corral run` for the corpus exchanges ``names``: {name: (tag, result)}."""
    tags = {name: new_tag() for name in names}
    calls = [{"body": (trim or dict)(corpus.load(n)["request"]["body"]),
              "headers": {"x-test-id": tags[n], "x-mock-exchange": n}} for n in names]
    proc = corral_run(gateway, ["node", str(sdks / script), json.dumps(calls)], clean_env(**key))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "saw no LLM request" not in proc.stderr
    results = [json.loads(line) for line in proc.stdout.strip().splitlines()[-len(names):]]
    return {name: (tags[name], result) for name, result in zip(names, results, strict=True)}


def test_node_openai_sdk_captured_by_corral_run(gateway: Gateway, mock: MockUpstream, node_sdks: Path) -> None:
    names = ["openai-chat-json-1", "openai-chat-stream-1"]
    results = node_calls(gateway, node_sdks, "openai-test.mjs", names, {"OPENAI_API_KEY": "sk-test-node"})
    for name, (tag, result) in results.items():
        expect = corpus.load(name)["expect"]
        row = gateway.row_for(tag)
        assert (row["mode"], row["provider"], row["upstream"]) == ("explicit", "openai", mock.url)
        assert (row["input_tokens"], row["output_tokens"]) == (expect["input_tokens"], expect["output_tokens"])
        assert row["error"] is None and row["complete"]
        assert bool(row["stream"]) == (expect["stream_format"] != "json")
        if expect["stream_format"] == "json":
            assert result["usage"]["prompt_tokens"] == expect["input_tokens"]
        else:
            assert result["chunks"] >= 2 and result["text"]


def test_node_anthropic_sdk_captured_by_corral_run(gateway: Gateway, node_sdks: Path) -> None:
    names = ["anthropic-messages-json-1", "anthropic-messages-stream-1"]
    keep = ("model", "max_tokens", "messages", "stream")
    results = node_calls(gateway, node_sdks, "anthropic-test.mjs", names, {"ANTHROPIC_API_KEY": "sk-ant-node"},
                         lambda body: {k: v for k, v in body.items() if k in keep})
    for name, (tag, result) in results.items():
        expect = corpus.load(name)["expect"]
        row = gateway.row_for(tag)
        assert (row["mode"], row["provider"]) == ("explicit", "anthropic")
        assert (row["input_tokens"], row["output_tokens"]) == (expect["input_tokens"], expect["output_tokens"])
        assert result["usage"]["output_tokens"] == expect["output_tokens"]
        assert row["error"] is None and row["complete"]


def test_without_the_preload_node_fetch_goes_around_and_corral_run_says_so(
    gateway: Gateway, fresh_mock: MockUpstream, node_sdks: Path
) -> None:
    """Control and item 2 at once: the same script with NODE_OPTIONS taken away inside the command never
    reaches the gateway (Node's fetch ignores HTTPS_PROXY; here it fails to resolve the real host), and
    `corral run` names the variable the client ignored."""
    calls = [{"body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
              "headers": {"x-test-id": new_tag()}}]
    command = ["env", "-u", "NODE_OPTIONS", "node", str(node_sdks / "openai-test.mjs"), json.dumps(calls)]
    proc = corral_run(gateway, command, clean_env(OPENAI_API_KEY="sk-test-node"))
    assert proc.returncode != 0  # the program's own exit status
    assert "saw no LLM request" in proc.stderr and "NODE_OPTIONS" in proc.stderr, proc.stderr
    assert fresh_mock.request_count == 0


def test_corral_run_passes_exit_status_and_needs_a_gateway(gateway: Gateway, tmp_path: Path) -> None:
    proc = corral_run(gateway, ["sh", "-c", "exit 7"], clean_env(), "--no-check")
    assert proc.returncode == 7 and proc.stderr == ""
    argv = [*CORRAL, "run", "--listen", "127.0.0.1:9", "--certs", str(tmp_path / "certs"), "--", "true"]
    proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no gateway is listening on 127.0.0.1:9" in proc.stderr


HTTPS_MODULE_JS = """
import https from "node:https";
const [tag, body] = process.argv.slice(2);
const req = https.request("https://api.openai.com/v1/chat/completions", { method: "POST", headers: {
  "content-type": "application/json", authorization: "Bearer sk-test-https", "x-test-id": tag,
  "x-mock-exchange": "openai-chat-json-1" } }, (res) => {
  res.resume();  // the body as recorded may be compressed: the row says what it held
  res.on("end", () => console.log(res.statusCode));
});
req.on("error", (e) => { console.error(e); process.exit(1); });
req.end(body);
"""


def test_node_https_module_captured_by_corral_run(gateway: Gateway, tmp_path: Path, tag: str) -> None:
    """Node's https module with its default agent (node-fetch 2 and older SDKs use it) ignores HTTPS_PROXY
    as fetch does: the preload's global agent tunnels it."""
    if not shutil.which("node"):
        pytest.skip("node is not installed")
    script = tmp_path / "https-module.mjs"
    script.write_text(HTTPS_MODULE_JS)
    ex = corpus.load("openai-chat-json-1")
    proc = corral_run(gateway, ["node", str(script), tag, json.dumps(ex["request"]["body"])], clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.split() == ["200"]
    row = gateway.row_for(tag)
    assert (row["mode"], row["provider"], row["status"]) == ("explicit", "openai", 200)
    assert row["input_tokens"] == ex["expect"]["input_tokens"]


JAVA_CLIENT = """
import java.net.URI;
import java.net.http.*;

public class CorralJava {
    public static void main(String[] args) throws Exception {
        var client = HttpClient.newHttpClient();  // default proxy selector and SSL context
        var request = HttpRequest.newBuilder(URI.create("https://api.openai.com/v1/chat/completions"))
            .header("content-type", "application/json").header("authorization", "Bearer sk-test-java")
            .header("x-test-id", args[0]).header("x-mock-exchange", "openai-chat-json-1")
            .POST(HttpRequest.BodyPublishers.ofString(args[1])).build();
        var response = client.send(request, HttpResponse.BodyHandlers.ofString());
        System.out.println(response.statusCode());
    }
}
"""


def test_java_http_client_captured_by_corral_run(gateway: Gateway, tmp_path: Path, tag: str) -> None:
    if not shutil.which("java"):
        pytest.skip("java is not installed")
    source = tmp_path / "CorralJava.java"
    source.write_text(JAVA_CLIENT)
    body = json.dumps(corpus.load("openai-chat-json-1")["request"]["body"])
    proc = corral_run(gateway, ["java", str(source), tag, body], clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "200"
    row = gateway.row_for(tag)
    assert (row["mode"], row["provider"], row["status"]) == ("explicit", "openai", 200)
    assert row["input_tokens"] == corpus.load("openai-chat-json-1")["expect"]["input_tokens"]


CAPTURED_SCRIPT = """
import json, sys
from openai import OpenAI
client = OpenAI(max_retries=0)  # base URL from OPENAI_BASE_URL; no proxy anywhere in the environment
r = client.chat.completions.create(**json.loads(sys.argv[1]), extra_headers={"x-test-id": sys.argv[2]})
print(json.dumps({"usage": r.usage.model_dump()}))
"""


@pytest.fixture(scope="module")
def capture_gateway(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory):
    """A gateway that treats https://127.0.0.1:<port> as openai (nothing listens there): only a captured
    connection can reach it."""
    from addon.local_capture import unavailable

    reason = unavailable()
    if reason:
        pytest.skip(f"local capture is not available on this machine: {reason}")
    port = free_port()
    config = {"gateway": {"intercept_hosts": [f"openai=^127\\.0\\.0\\.1:{port}$"]}}
    gw = Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("capture"))
    gw.captured_port = port
    with gw:
        yield gw


def test_corral_run_capture_without_any_proxy_setting(capture_gateway: Gateway, mock: MockUpstream, tag: str) -> None:
    gw = capture_gateway
    body = corpus.load("openai-chat-json-1")["request"]["body"]
    mock.enqueue("openai-chat-json-1")
    env = clean_env(OPENAI_API_KEY="sk-test-capture", OPENAI_BASE_URL=f"https://127.0.0.1:{gw.captured_port}/v1",
                    HTTPS_PROXY="http://127.0.0.1:9")  # a stray proxy setting is removed, not used
    proc = corral_run(gw, [sys.executable, "-c", CAPTURED_SCRIPT, json.dumps(body), tag], env, "--capture")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    row = gw.row_for(tag)
    assert (row["mode"], row["provider"], row["status"], row["upstream"]) == ("capture", "openai", 200, mock.url)
    assert row["input_tokens"] == corpus.load("openai-chat-json-1")["expect"]["input_tokens"]

    # Control: without --capture the program connects directly (corral run's NO_PROXY exempts 127.0.0.1),
    # and nothing listens there.
    proc = corral_run(gw, [sys.executable, "-c", CAPTURED_SCRIPT, json.dumps(body), tag + "-direct"],
                      env, "--no-check")
    assert proc.returncode != 0 and "Connection error" in proc.stderr, proc.stderr[-2000:]


def test_node_through_a_gateway_with_proxy_authentication(
    mock: MockUpstream, node_sdks: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """[gateway] proxyauth: the preload sends the credentials from HTTPS_PROXY on CONNECT, and corral run's
    own /_corral/flows check authenticates too (no false warning)."""
    config = {"gateway": {"proxyauth": "corral:s3cr@t"}}
    with Gateway(mock.url, config=config, workdir=tmp_path_factory.mktemp("proxyauth")) as gw:
        results = node_calls(gw, node_sdks, "openai-test.mjs", ["openai-chat-json-1"], {"OPENAI_API_KEY": "sk-t"})
        tag, result = results["openai-chat-json-1"]
        row = gw.row_for(tag)
        assert (row["mode"], row["provider"], row["status"]) == ("explicit", "openai", 200)
        assert result["usage"]["prompt_tokens"] == row["input_tokens"]
        assert "s3cr" not in json.dumps(row)


def test_capture_redirector_does_not_outlive_the_gateway(
    mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import signal
    import time

    import httpx

    from addon.local_capture import unavailable

    if unavailable():
        pytest.skip(f"local capture is not available on this machine: {unavailable()}")
    with subprocess.Popen(["sleep", "60"]) as sleeper:
        gw = Gateway(mock.url, workdir=tmp_path_factory.mktemp("capture-kill")).start()
        try:
            reply = httpx.post(f"{gw.url}/_corral/capture?pid={sleeper.pid}", trust_env=False, timeout=30)
            assert reply.status_code == 200, reply.text
            children = [p for p in Path("/proc").glob("[0-9]*") if _ppid(p) == gw.proc.pid
                        and b"redirector" in _read(p / "cmdline")]
            assert len(children) == 1
        finally:
            gw.stop(signal.SIGTERM)
            sleeper.kill()
        deadline = time.monotonic() + 10
        while children[0].exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not children[0].exists()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _ppid(proc: Path) -> int | None:
    stat = _read(proc / "stat")
    return int(stat.rsplit(b")", 1)[1].split()[1]) if stat else None
