"""Corral loaded by mitmproxy's own tools: `mitmdump -s addon/corral.py` records what `corral start`
records, and `mitmweb -s addon/corral.py` shows each LLM flow with its one-line comment."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import corpus
from tests.support.gateway import CORRAL, Gateway, free_port, new_tag
from tests.support.mock_upstream import MockUpstream
from tests.support.reliability import reliability
from tests.support.waiting import until

BIN = Path(sys.executable).parent
COMPARED = ("mode", "provider", "model", "status", "stream", "input_tokens", "output_tokens",
            "cached_input_tokens", "cost_usd", "complete", "error", "upstream", "path", "cache")


class MitmGateway(Gateway):
    """The same gateway, started by mitmdump/mitmweb with the addon script and --set options."""

    def __init__(self, upstream: str, tool: str, extra: list[str] | None = None, **kw) -> None:
        super().__init__(upstream, **kw)
        self.tool, self.extra = tool, extra or []

    def command(self) -> list[str]:
        return [str(BIN / self.tool), "-s", "addon/corral.py", "--listen-host", "127.0.0.1",
                "--listen-port", str(self.port), "--set", f"confdir={self.workdir / 'certs'}",
                "--set", "connection_strategy=lazy", "--set", f"corral_config={self.config_path}",
                "--set", f"corral_storage_db={self.db}", *self.extra]


def exercise(gw: Gateway, tags: list[str]) -> None:
    """One reverse-mode JSON call and one explicit-mode stream, tagged."""
    ex = corpus.load("openai-chat-json-1")
    with httpx.Client(timeout=20, trust_env=False) as client:
        r = client.post(gw.base("openai") + "/v1/chat/completions", json=ex["request"]["body"],
                        headers={"x-mock-exchange": "openai-chat-json-1", "x-test-id": tags[0],
                                 "authorization": "Bearer sk-test"})
        assert r.status_code == 200
    ca = gw.workdir / "certs" / "mitmproxy-ca-cert.pem"
    until(ca.exists)  # mitmdump writes its CA in `running`, just after it listens
    trust = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(timeout=20, trust_env=False, proxy=gw.url, verify=trust) as client:
        body = corpus.load("anthropic-messages-stream-1")["request"]["body"]
        r = client.post("https://api.anthropic.com/v1/messages", json=body,
                        headers={"x-mock-exchange": "anthropic-messages-stream-1", "x-test-id": tags[1],
                                 "x-api-key": "sk-ant-test", "accept-encoding": "identity"})
        assert r.status_code == 200


def test_mitmdump_records_the_same_rows_as_corral_start(gateway: Gateway, mock: MockUpstream, tmp_path: Path) -> None:
    ours = [new_tag(), new_tag()]
    exercise(gateway, ours)
    expected = [gateway.row_for(t) for t in ours]
    with MitmGateway(mock.url, "mitmdump", workdir=tmp_path) as dump:
        theirs = [new_tag(), new_tag()]
        exercise(dump, theirs)
        got = [dump.row_for(t) for t in theirs]
    assert [r["mode"] for r in got] == ["reverse", "explicit"]
    for mine, other in zip(expected, got, strict=True):
        assert {k: other[k] for k in COMPARED} == {k: mine[k] for k in COMPARED}
    assert (tmp_path / "certs" / "mitmproxy-ca.pem").stat().st_mode & 0o777 == 0o600


async def watch_updates(web_port: int, token: str, action, count: int) -> dict[str, dict]:
    """Run ``action`` while listening on mitmweb's /updates WebSocket, as its browser UI does, until
    ``count`` flows have been pushed with a comment; returns the last pushed state of every flow."""
    from tornado import httpclient, websocket

    request = httpclient.HTTPRequest(f"ws://127.0.0.1:{web_port}/updates",
                                     headers={"Authorization": f"Bearer {token}"})
    for _ in range(200):  # the web server comes up just after the proxy listener
        try:
            conn = await websocket.websocket_connect(request)
            break
        except ConnectionRefusedError:
            await asyncio.sleep(0.05)
    last: dict[str, dict] = {}
    task = asyncio.create_task(asyncio.to_thread(action))
    while not (task.done() and sum(1 for f in last.values() if f.get("comment")) >= count):
        raw = await asyncio.wait_for(conn.read_message(), timeout=20)
        message = json.loads(raw) if raw else {}
        if message.get("type") in ("flows/add", "flows/update"):
            flow = message["payload"]["flow"]
            last[flow["id"]] = flow
    await task
    conn.close()
    return last


def test_mitmweb_shows_the_annotation(mock: MockUpstream, tmp_path: Path) -> None:
    web_port, token = free_port(), "corral-test-token"
    extra = ["--no-web-open-browser", "--web-host", "127.0.0.1", "--web-port", str(web_port),
             "--set", f"web_password={token}"]
    tags = [new_tag(), new_tag()]
    with MitmGateway(mock.url, "mitmweb", extra, workdir=tmp_path) as web:
        pushed = asyncio.run(watch_updates(web_port, token, lambda: exercise(web, tags), len(tags)))
        web.row_for(tags[1])
        flows = httpx.get(f"http://127.0.0.1:{web_port}/flows", headers={"Authorization": f"Bearer {token}"},
                          timeout=10, trust_env=False).json()
    # The browser got the comment live: the last state pushed over /updates carries it.
    assert all(pushed[f["id"]]["comment"] == f["comment"] for f in flows), pushed
    by_tag = {}
    for f in flows:
        headers = dict((k.lower(), v) for k, v in f["request"]["headers"])
        by_tag[headers.get("x-test-id")] = f
    reverse, explicit = by_tag[tags[0]], by_tag[tags[1]]
    ex = corpus.load("openai-chat-json-1")["expect"]
    assert reverse["comment"].startswith(f"openai {ex['model']} · {ex['input_tokens']}→{ex['output_tokens']} tok · $")
    ex = corpus.load("anthropic-messages-stream-1")["expect"]
    assert explicit["comment"].startswith(
        f"anthropic {ex['model']} · {ex['input_tokens']}→{ex['output_tokens']} tok · stream"
    )
    assert not reverse["marked"]


@reliability(
    "isolation",
    "proxy on a non-loopback address without proxy authentication",
    "the gateway refuses to start (exit 2)",
    "-",
)
def test_corral_start_refuses_an_open_proxy(tmp_path: Path) -> None:
    """Refused before anything listens; mitmdump refuses the same way (ProxyScope.configure)."""
    gw = Gateway(None, workdir=tmp_path)
    gw.command = lambda: [*CORRAL, "start", "--listen", f"0.0.0.0:{gw.port}", "--db", gw.db,
                          "--config", str(gw.config_path), "--certs", str(tmp_path / "certs")]
    with pytest.raises(RuntimeError, match=r"(?s)exited with 2.*refusing to listen beyond loopback"):
        gw.start()
