"""`/_corral/flows`: how many provider requests this gateway process has seen since it started.

`corral run` reads it before and after the program it starts: no change means the program's LLM
calls (if it made any) went around Corral, and it says which variable the client most likely ignored.
Counted at `requestheaders`, so a request still in flight, or one the client gave up on, counts too.
"""

from __future__ import annotations

import json
import os

from mitmproxy import http

from addon import metadata as md, netaddr, workers

FLOWS_ENDPOINT = "/flows"


class FlowCounter:
    def __init__(self) -> None:
        self.seen = 0

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        meta = flow.metadata
        if meta.get(md.INTERNAL) == FLOWS_ENDPOINT and flow.response is None:
            self._answer(flow)
        elif md.PROVIDER in meta:
            self.seen += 1

    def _answer(self, flow: http.HTTPFlow) -> None:
        peer = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        if not netaddr.is_loopback(peer):
            flow.response = http.Response.make(
                403, b'{"error": "corral: loopback only"}', {"content-type": "application/json"}
            )
            return
        # With --workers N each process counts its own connections: the reader must know the count is partial.
        body = {"seen": self.seen, "pid": os.getpid(), "worker": os.environ.get(workers.WORKER_ENV)}
        flow.response = http.Response.make(200, json.dumps(body), {"content-type": "application/json"})
