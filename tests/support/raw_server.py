"""A loopback TCP server that answers every connection with fixed bytes and closes it, in a thread.

For upstreams that are wrong at the transport level, e.g. a plain-HTTP server where the gateway
expects TLS: the greeting is not a TLS record, so the handshake fails at once.
"""

from __future__ import annotations

import socket
import threading


class RawServer:
    def __init__(self, greeting: bytes = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
                 read_request: bool = False) -> None:
        self.greeting = greeting
        # Read the request (head and content-length body) before answering: closing a socket with
        # unread bytes sends a reset, which the peer may see before the answer.
        self.read_request = read_request
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="raw-server", daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the thread's accept(); close() alone does not
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            self.connections += 1
            with conn:
                try:
                    if self.read_request:
                        _read_request(conn)
                    conn.sendall(self.greeting)
                except OSError:
                    pass


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk
