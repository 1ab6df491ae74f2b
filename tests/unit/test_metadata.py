"""addon/metadata.py: the one test for "the client went away", which recorder, cache and metrics share."""

from __future__ import annotations

import pytest
from mitmproxy import flow as mflow
from mitmproxy.test import tflow

from addon import metadata as md


@pytest.mark.parametrize("msg,gone", [
    ("Client disconnected.", True),  # mitmproxy, HTTP/1: the client closed mid-response
    ("Client closed connection before completing request headers: b''", True),
    ("stream reset by client (CANCEL)", True),  # HTTP/2
    ("peer closed connection without sending complete message body: incomplete chunked read", False),
    ("Server disconnected.", False),
    (mflow.Error.KILLED_MESSAGE, False),
])
def test_client_went_away(msg: str, gone: bool) -> None:
    flow = tflow.tflow(resp=True)
    flow.error = mflow.Error(msg)
    assert md.client_went_away(flow) is gone


def test_no_error_is_not_a_departure() -> None:
    assert not md.client_went_away(tflow.tflow(resp=True))
