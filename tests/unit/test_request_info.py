"""addon/request_info.py: model and stream of a request, whatever its body's type and encoding."""

from __future__ import annotations

import gzip
import zlib

import pytest
from mitmproxy.test import tutils

from addon import request_info
from providers.formats import get_family

OPENAI = get_family("openai")


def req(body: bytes, **headers: str):
    return tutils.treq(content=body, headers=tuple((k.replace("_", "-").encode(), v.encode())
                                                   for k, v in headers.items()))


def test_no_body_is_no_parse_error() -> None:
    info = request_info.read_request(OPENAI, "/v1/files", req(b""))
    assert (info.model, info.parse_error) == (None, None)
    azure = request_info.read_request(OPENAI, "/openai/deployments/gpt4o/files", req(b""))
    assert azure.model == "gpt4o"  # what the path alone says


@pytest.mark.parametrize("coding, encode", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_json_is_read(coding: str, encode) -> None:
    body = encode(b'{"model": "m", "stream": true}')
    info = request_info.read_request(OPENAI, "/v1/chat/completions",
                                     req(body, content_type="application/json", content_encoding=coding))
    assert (info.model, info.stream, info.parse_error) == ("m", True, None)


def test_bad_and_huge_compressed_bodies(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = request_info.read_request(OPENAI, "/v1/x", req(b"not gzip", content_encoding="gzip"))
    assert bad.parse_error and "gzip" in bad.parse_error
    monkeypatch.setattr(request_info, "DECODE_CEILING", 1000)
    bomb = gzip.compress(b"{" + b" " * 100_000 + b"}")
    big = request_info.read_request(OPENAI, "/v1/x", req(bomb, content_encoding="gzip"))
    assert big.parse_error and "more than" in big.parse_error


def test_multipart_model_and_stream() -> None:
    body = (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
            b'\x00\x01--Xy\r\n\xff\r\n--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-4o-transcribe'
            b'\r\n--XyZ\r\nContent-Disposition: form-data; name="stream"\r\n\r\ntrue\r\n--XyZ--\r\n')
    info = request_info.read_request(OPENAI, "/v1/audio/transcriptions",
                                     req(body, content_type='multipart/form-data; boundary="XyZ"'))
    assert (info.model, info.stream, info.parse_error) == ("gpt-4o-transcribe", True, None)


@pytest.mark.parametrize("ctype", ["application/octet-stream", "application/sdp", "audio/wav"])
def test_bodies_not_meant_to_be_json_are_not_parse_errors(ctype: str) -> None:
    info = request_info.read_request(OPENAI, "/v1/x", req(b"\x00\xffv=0", content_type=ctype))
    assert info.parse_error is None


@pytest.mark.parametrize("ctype", ["", "application/x-www-form-urlencoded", "text/plain", "application/json"])
def test_json_under_other_labels_is_still_read(ctype: str) -> None:
    headers = {"content_type": ctype} if ctype else {}
    info = request_info.read_request(OPENAI, "/v1/chat/completions", req(b'{"model": "m"}', **headers))
    assert info.model == "m"
    broken = request_info.read_request(OPENAI, "/v1/chat/completions", req(b'{"model": ', **headers))
    assert broken.parse_error
