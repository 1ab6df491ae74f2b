"""`corral run --capture -- CMD`: the program's connections redirected to the gateway by mitmproxy's
local capture mode (addon/local_capture.py), with no proxy variable at all: for clients that ignore
them. The program is started held (it waits on a pipe before exec), registered with the gateway by
its PID, then let go, so its first connection is already captured. It still gets the trust variables:
a redirected TLS connection meets Corral's CA like a proxied one. Its child processes are not captured
(mitmproxy matches the PID itself).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

from addon import ca, client_env

if TYPE_CHECKING:
    from addon.cli.run import Gateway

ENDPOINT = "/_corral/capture"
READY_TIMEOUT = 10.0
# Runs as the program's process (same PID after exec): waits until `corral run` has registered it, then
# until its own connections are redirected (the redirector attaches its eBPF program a moment after it
# starts): a connection to a closed loopback port is refused unless mitmproxy accepts it. Then execs.
HOLDER = f"""
import os, socket, sys, time
os.read(3, 1)
os.close(3)
deadline = time.monotonic() + {READY_TIMEOUT}
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("corral: the capture did not take effect within {READY_TIMEOUT:g} s (see the gateway's log)")
        time.sleep(0.02)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as e:
    sys.exit(f"corral: {{sys.argv[2]}}: {{e.strerror}}")
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(gateway: Gateway, files: ca.CaFiles, command: list[str]) -> int:
    from addon.cli.run import wait

    environ = {**os.environ, **client_env.variables(files, None, os.environ)}
    for name in client_env.PROXY_NAMES:  # the point of capture: no proxy setting, here or inherited
        environ.pop(name, None)
        environ.pop(name.lower(), None)
    read_end, write_end = os.pipe()
    held = [sys.executable, "-I", "-c", HOLDER, str(_closed_port()), *command]

    def pipe_on_fd3() -> None:
        os.dup2(read_end, 3)

    try:
        proc = subprocess.Popen(held, env=environ, preexec_fn=pipe_on_fd3, pass_fds=(3,))
    finally:
        os.close(read_end)
    try:
        status, reply = gateway.call("POST", f"{ENDPOINT}?pid={proc.pid}")
    except OSError as e:
        status, reply = 0, {"error": str(e)}
    if status != 200:
        os.close(write_end)
        proc.kill()
        proc.wait()
        reason = reply.get("error") or f"the gateway answered {status} (a gateway without capture support?)"
        print(f"corral: cannot capture `{command[0]}`: {reason}.\n"
              "corral: use the environment route instead: `corral run -- CMD ...` (proxy variables, CA bundle "
              "and the Node.js preload), which needs no privileges.", file=sys.stderr)
        return 2
    os.write(write_end, b"go\n")
    os.close(write_end)
    try:
        return wait(proc)
    finally:
        try:
            gateway.call("DELETE", f"{ENDPOINT}?pid={proc.pid}")
        except OSError:
            pass  # the gateway went away: nothing left to release
