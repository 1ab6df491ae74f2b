"""WebSocket sessions (realtime APIs) to a provider host pass through explicit mode unchanged."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from pathlib import Path

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from tests.support.gateway import Gateway, new_tag


class EchoServer:
    """A tornado WebSocket echo server on loopback (stands in for wss://api.openai.com/v1/realtime)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        from tornado import httpserver, netutil, web, websocket

        class Echo(websocket.WebSocketHandler):
            def on_message(self, message):
                self.write_message(f"echo:{message}")

        async def main() -> None:
            sockets = netutil.bind_sockets(0, "127.0.0.1")
            httpserver.HTTPServer(web.Application([(r"/v1/realtime", Echo)])).add_sockets(sockets)
            self.port = sockets[0].getsockname()[1]
            ready.set()
            await asyncio.Event().wait()

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(main())


def ws_roundtrip(gw: Gateway, ca: Path, messages: list[str], tag: str) -> list[str]:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    sock.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
    assert b" 200" in sock.recv(4096)
    tls = ssl.create_default_context(cafile=str(ca)).wrap_socket(sock, server_hostname="api.openai.com")
    ws = WSConnection(ConnectionType.CLIENT)
    tls.sendall(ws.send(Request(host="api.openai.com", target="/v1/realtime?model=gpt-realtime",
                                extra_headers=[(b"x-test-id", tag.encode()), (b"authorization", b"Bearer sk-rt")])))
    got: list[str] = []
    pending = list(messages)
    while True:
        data = tls.recv(65536)
        if not data:
            break
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, AcceptConnection) or isinstance(event, TextMessage):
                if isinstance(event, TextMessage):
                    got.append(event.data)
                if pending:
                    tls.sendall(ws.send(TextMessage(pending.pop(0))))
                else:
                    tls.sendall(ws.send(CloseConnection(code=1000)))
            elif isinstance(event, CloseConnection):
                tls.close()
                return got
    return got


def test_realtime_websocket_passes_through(tmp_path: Path) -> None:
    server = EchoServer()
    config = {"providers.openai": {"upstream": f"http://127.0.0.1:{server.port}"},
              "gateway": {"websocket_messages": 2}}
    with Gateway(None, workdir=tmp_path, config=config) as gw:
        tag = new_tag()
        messages = [f"m{i}" for i in range(6)]
        got = ws_roundtrip(gw, tmp_path / "certs" / "mitmproxy-ca-cert.pem", messages, tag)
        assert got == [f"echo:{m}" for m in messages]
        row = gw.row_for(tag)
        assert row["mode"] == "explicit" and row["provider"] == "openai" and row["status"] == 101
        assert "sk-rt" not in (row["request_headers"] or "")
