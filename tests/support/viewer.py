"""A gateway with the viewer on a free port, filled through real SDK calls (shared by the viewer tests)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
from google import genai

from tests.support.gateway import Gateway, free_port
from tests.support.mock_upstream import MockUpstream


@dataclasses.dataclass
class ViewerGateway:
    gw: Gateway
    mock: MockUpstream
    url: str  # viewer base URL, ending in "/"
    tag: str

    def api(self, path: str, **params) -> httpx.Response:
        return httpx.get(
            self.url + path.lstrip("/"), params={k: v for k, v in params.items() if v is not None}, timeout=10
        )

    def openai(self, exchange: str, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gw.base("openai/v1"), api_key="sk-viewer-test-secret",
                             default_headers={"x-mock-exchange": exchange, "x-test-id": self.tag}, max_retries=0, **kw)

    def chat(self, exchange: str, stream: bool) -> str:
        """One OpenAI chat call through the gateway; the reassembled text the SDK saw."""
        client = self.openai(exchange)
        messages = [{"role": "user", "content": f"viewer test {exchange}"}]
        if stream:
            out = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
            return "".join((c.choices[0].delta.content or "") for c in out if c.choices)
        return client.chat.completions.create(model="gpt-4o-mini", messages=messages).choices[0].message.content or ""

    def populate(self) -> None:
        """Real SDK calls of every kind the viewer must show: streams, JSON, three providers, an error."""
        self.chat("openai-chat-stream-1", stream=True)
        self.chat("openai-chat-json-1", stream=False)
        client = anthropic.Anthropic(
            base_url=self.gw.base("anthropic"),
            api_key="sk-ant-viewer-test",
            default_headers={"x-mock-exchange": "anthropic-messages-stream-1", "x-test-id": self.tag},
            max_retries=0,
        )
        with client.messages.stream(model="claude-3-5-haiku-latest", max_tokens=50,
                                    messages=[{"role": "user", "content": "hi"}]) as s:
            s.get_final_message()
        g = genai.Client(
            api_key="gem-viewer-test",
            http_options={
                "base_url": self.gw.base("gemini"),
                "headers": {"x-mock-exchange": "gemini-generatecontent-json-1", "x-test-id": self.tag},
            },
        )
        g.models.generate_content(model="gemini-2.5-flash", contents="hi")
        try:
            self.chat("openai-chat-error-1", stream=False)
        except openai.APIStatusError:
            pass
        self.gw.wait_rows(lambda r: self.tag in (r.get("request_headers") or ""), count=5)


def viewer_gateway(mock: MockUpstream, workdir, tag: str, token: str | None = None) -> Iterator[ViewerGateway]:
    port = free_port()
    section = {"listen": f"127.0.0.1:{port}"}
    if token:
        section["token"] = token
    gw = Gateway(mock.url, workdir=workdir, config={"viewer": section})
    with gw:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield ViewerGateway(gw, mock, url, tag)
