"""Test-only name resolution for a gateway subprocess: put this directory on its PYTHONPATH and set
CORRAL_TEST_HOSTS="name:port=127.0.0.1:port,...". Lets tests use look-alike provider names
(api.openai.com.example.test:443) without any DNS query leaving the machine."""

import os
import socket

_MAP = {}
for _item in os.environ.get("CORRAL_TEST_HOSTS", "").split(","):
    if "=" in _item:
        _src, _dst = _item.split("=", 1)
        _host, _port = _src.rsplit(":", 1)
        _dhost, _dport = _dst.rsplit(":", 1)
        _MAP[(_host.lower(), int(_port))] = (_dhost, int(_dport))

if _MAP:
    _real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        key = (host.lower() if isinstance(host, str) else host, int(port) if port is not None else None)
        if key in _MAP:
            host, port = _MAP[key]
        return _real_getaddrinfo(host, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
