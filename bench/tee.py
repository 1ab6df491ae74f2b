"""Plain mitmdump plus the smallest possible streaming tee: SSE responses are streamed, not buffered.
The floor of what any streaming addon can cost: `mitmdump -s bench/tee.py --mode reverse:...`."""

from mitmproxy import http


class StreamSSE:
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response.headers.get("content-type", "").startswith("text/event-stream"):
            flow.response.stream = True


addons = [StreamSSE()]
