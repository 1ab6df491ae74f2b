"""`corral start --workers N`: N gateway processes serving one port, so every core does work.

One mitmproxy process uses at most one core (docs/decisions.md). With ``--workers N`` the `corral start`
process becomes a small supervisor that starts N ordinary gateway processes (`corral start` again, with
``CORRAL_WORKER=1..N`` in their environment) and does no proxying itself.

How N processes share one port: each worker's listener sets ``SO_REUSEPORT`` (Linux >= 3.9, BSDs,
macOS); the kernel then hashes every new connection to one of the listening sockets. mitmproxy has
no option for it and takes no pre-bound socket: it calls ``asyncio.start_server(handler, host, port)``
in ``AsyncioServerInstance.listen`` (mitmproxy/proxy/mode_servers.py), so ``enable_reuse_port()``
wraps that one method to pass ``reuse_port=True`` for TCP listeners. Nothing else of mitmproxy changes.
The kernel balances *connections*, not requests: a client holding one keep-alive connection stays on
one worker; many clients (or a pool of connections) spread over all of them.

Shared state: every worker records into the same database (SQLite in WAL mode with a busy timeout,
each worker with its own batching writer thread; or PostgreSQL) and runs the schema migrations under
a lock at start. Rate-limit windows and cache entries are shared through ``[state] url = "redis://..."``
(addon/state.py); with the default ``memory://`` each worker keeps its own windows, and the cache's
in-memory layer sits in front of the shared database table.

The web viewer (a reader of the shared record) runs in worker 1 only; the other workers start
with it turned off, so its port is not contended.

Supervision: SIGTERM/SIGINT to the supervisor is forwarded to every worker (each flushes its record
and exits); the supervisor exits when they have. A worker that fails (non-zero exit) while serving is restarted; one
that fails within its first seconds (bad config, port trouble) stops everything with its exit code.
Workers get SIGTERM from the kernel if the supervisor itself is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

WORKER_ENV = "CORRAL_WORKER"  # 1..N in each worker (recorded as flows.worker)
REUSE_PORT_ENV = "CORRAL_REUSE_PORT"
STARTUP_GRACE = 10.0  # default: a worker dying sooner than this after its start is a startup failure


def enable_reuse_port() -> None:
    """Make every TCP listener mitmproxy opens in this process set SO_REUSEPORT."""
    from mitmproxy.proxy import mode_servers

    cls = mode_servers.AsyncioServerInstance
    if getattr(cls.listen, "_corral_reuse_port", False):
        return
    original = cls.listen

    async def listen(self, host: str, port: int):
        if self.mode.transport_protocol != "tcp" or port == 0:
            return await original(self, host, port)
        return [await asyncio.start_server(self.handle_stream, host or None, port, reuse_port=True)]

    listen._corral_reuse_port = True  # type: ignore[attr-defined]
    cls.listen = listen  # type: ignore[method-assign]


def check_port_free(host: str, port: int) -> None:
    """Raise OSError when something already listens on host:port.

    SO_REUSEPORT would otherwise let a second `corral start --workers` (same user) silently share
    the port with the first one; a plain bind, as here, fails if any socket holds the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does: TIME_WAIT is no conflict
        s.bind((host, port))


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: workers outlive a SIGKILLed supervisor; SIGTERM still reaches them


class Supervisor:
    def __init__(self, count: int, child_args: list[str], others_args: list[str] | None = None,
                 startup_grace: float = STARTUP_GRACE, command: list[str] | None = None) -> None:
        self.count = count
        self.startup_grace = startup_grace
        self.command = command or [sys.executable, "-m", "addon.cli"]  # what the arguments are given to
        self.child_args = child_args  # `corral` arguments of worker 1 (a `start` command line)
        self.others_args = others_args or child_args  # ... of workers 2..N (e.g. without the viewer)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started_at: dict[int, float] = {}
        self.stopping = False

    def _spawn(self, index: int) -> None:
        env = {**os.environ, WORKER_ENV: str(index), REUSE_PORT_ENV: "1"}
        self.procs[index] = subprocess.Popen(
            [*self.command, *(self.others_args if index > 1 else self.child_args)], env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.started_at[index] = time.monotonic()

    def _signal(self, signum: int, _frame: object) -> None:
        self.stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def _forward(self, signum: int, _frame: object) -> None:
        """SIGHUP (reload corral.toml): every worker reloads."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._forward)
        for index in range(1, self.count + 1):
            self._spawn(index)
        code = 0
        while self.procs:
            time.sleep(0.1)
            for index, proc in list(self.procs.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del self.procs[index]
                if self.stopping:
                    code = code or rc
                elif rc == 0:  # stopped on purpose (SIGTERM to that worker alone): not restarted
                    print(f"corral: worker {index} stopped", flush=True)
                elif time.monotonic() - self.started_at[index] < self.startup_grace:
                    print(f"corral: worker {index} failed to start (exit {rc}); stopping", flush=True)
                    code = rc or 1
                    self._signal(signal.SIGTERM, None)
                else:
                    print(f"corral: worker {index} exited with {rc}; restarting it", flush=True)
                    self._spawn(index)
        return code
