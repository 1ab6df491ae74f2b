"""How the recorder stores a body within corral_storage_body_limit (addon/recorder.py::_body_text)."""

from __future__ import annotations

import pytest

from addon.recorder import _body_text


@pytest.mark.parametrize(("raw", "limit", "stored"), [
    (b"", 10, None),
    (None, 10, None),
    ("naïve".encode(), 100, "naïve"),
    ("naïve".encode(), 3, "na"),  # the clip cut "ï" in two: the text before it, not base64
    ("日本".encode(), 4, "日"),  # a 3-byte character cut after its first byte
    ("日本".encode(), 5, "日"),  # ... and after its second
    ("日本".encode(), 6, "日本"),  # clipped exactly at a character boundary
])
def test_text_bodies_are_stored_as_text_even_when_the_clip_splits_a_character(
    raw: bytes | None, limit: int, stored: str | None
) -> None:
    assert _body_text(raw, limit) == stored


@pytest.mark.parametrize(("raw", "limit"), [
    (b"\xff\xfe\x00garbage", 100),  # not UTF-8 at all
    (b"ok\xff and then text", 5),  # invalid inside the kept part, not just cut at its end
    (b"ends mid-character \xc3", 100),  # the body itself is truncated: nothing was clipped
])
def test_bodies_that_are_not_utf8_are_stored_as_base64(raw: bytes, limit: int) -> None:
    assert _body_text(raw, limit).startswith("base64:")


def test_a_stream_error_event_stays_the_rows_error_when_the_client_hangs_up_after_it() -> None:
    from mitmproxy import flow as mflow
    from mitmproxy.test import tflow

    from addon import metadata as md
    from addon.recorder import _error_text

    f = tflow.tflow(resp=True)
    f.metadata[md.STREAM] = True
    f.error = mflow.Error("Client disconnected.")
    assert _error_text(f) == "client aborted the stream: Client disconnected."
    # An SDK raises the provider's error event and closes: the row keeps the provider's error.
    f.metadata[md.RESPONSE_ERROR] = "modelStreamErrorException: The model stopped unexpectedly."
    assert _error_text(f) == ("modelStreamErrorException: The model stopped unexpectedly. "
                              "(then the client closed the stream)")
    f.error = mflow.Error("Connection reset by upstream")  # the upstream broke off: that is the story
    assert _error_text(f) == "stream broke off: Connection reset by upstream"
