"""`/_corral/capture`: mitmproxy's local capture mode for single processes, for `corral run --capture`.

``POST /_corral/capture?pid=N`` adds process N to one ``local:PID,PID...`` mode (mitmproxy runs one
local redirector at a time), ``DELETE`` takes it out again; loopback clients only. The process's
connections are redirected to the gateway without any proxy setting (on Linux by an eBPF program that
mitmproxy's redirector attaches to the cgroup2 root; macOS/Windows have their own redirectors), so
only the trust of Corral's CA is still needed.

mitmproxy starts the redirector through ``sudo --non-interactive`` even when it already runs as root.
Where that cannot work (root without sudo installed, as in containers) or the cgroup2 hierarchy is
not mounted at /sys/fs/cgroup where the redirector looks for it (hybrid cgroup v1/v2 systems), a
gateway running as root puts a small ``sudo`` of its own first on its PATH: it runs the redirector
directly, in a private mount namespace with the cgroup2 hierarchy bound at /sys/fs/cgroup.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from mitmproxy import ctx, http

from addon import metadata as md, netaddr

CAPTURE_ENDPOINT = "/capture"
SHIM = """#!/bin/sh
# Written by Corral (addon/local_capture.py): mitmproxy's local redirector asks for sudo; this gateway is root.
while [ $# -gt 0 ]; do case "$1" in -*) shift;; *) break;; esac; done
%s
"""
SHIM_DIRECT = 'exec %s"$@"'
SHIM_CGROUP = """exec %sunshare -m sh -c 'mount --bind "$0" /sys/fs/cgroup && exec "$@"' %s "$@\""""
PDEATHSIG = "setpriv --pdeathsig TERM "  # the redirector gets SIGTERM when the gateway dies, even by SIGKILL


def cgroup2_mount() -> str | None:
    """Where the cgroup2 hierarchy is mounted, /sys/fs/cgroup first; None when it is not mounted."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    found = [fields[1] for fields in (line.split() for line in lines) if len(fields) > 2 and fields[2] == "cgroup2"]
    return "/sys/fs/cgroup" if "/sys/fs/cgroup" in found else (found[0] if found else None)


def redirector_children() -> list[int]:
    """PIDs of this process's children running mitmproxy's redirector (directly or through sudo). Linux."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"redirector" in cmdline:
            found.append(int(entry.name))
    return found


def unavailable() -> str | None:
    """Why local capture cannot work in this gateway process, or None when it may."""
    try:
        from mitmproxy_rs.local import LocalRedirector

        reason = LocalRedirector.unavailable_reason()
    except ImportError:  # mitmproxy_rs without the platform's redirector package
        return "mitmproxy's local redirector is not installed for this platform"
    if reason:
        return str(reason)
    if sys.platform.startswith("linux"):
        if os.geteuid() != 0 and not shutil.which("sudo"):
            return "the gateway is not root and sudo is not installed (the capture redirector needs root)"
        if cgroup2_mount() is None:
            return "this kernel has no cgroup2 hierarchy mounted (the redirector attaches an eBPF program to it)"
    elif sys.platform not in ("darwin", "win32"):
        return f"mitmproxy has no local capture mode on {sys.platform}"
    return None


def install_sudo_shim() -> None:
    """For a root gateway on Linux: make mitmproxy's ``sudo <redirector>`` work (see the module doc)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return
    mount = cgroup2_mount()
    if mount is None or (mount == "/sys/fs/cgroup" and shutil.which("sudo")):
        return  # nothing to work around
    pdeath = PDEATHSIG if shutil.which("setpriv") else ""
    body = SHIM_DIRECT % pdeath if mount == "/sys/fs/cgroup" else SHIM_CGROUP % (pdeath, shlex.quote(mount))
    folder = Path(tempfile.mkdtemp(prefix="corral-capture-"))
    shim = folder / "sudo"
    shim.write_text(SHIM % body)
    shim.chmod(0o755)
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


def socket_uid(local_port: int, remote_port: int) -> int | None:
    """Linux: the user owning the TCP socket ``local_port`` -> ``remote_port`` on this machine (the client
    side of a loopback connection to the gateway), from /proc/net/tcp{,6}; None when not found."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        ends = (f":{local_port:04X}", f":{remote_port:04X}")
        for line in lines:
            fields = line.split()
            if len(fields) > 7 and fields[1].endswith(ends[0]) and fields[2].endswith(ends[1]):
                return int(fields[7])
    return None


def may_capture(flow: http.HTTPFlow, pid: int) -> str | None:
    """Why the client of ``flow`` may not capture process ``pid``, or None: on Linux only the process's
    own user (or root) may have its connections redirected and decrypted."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        owner = Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return f"no process {pid}"
    peer, sock = flow.client_conn.peername, flow.client_conn.sockname
    uid = socket_uid(peer[1], sock[1]) if peer and sock else None
    if uid is None:
        return "cannot tell which user is asking"
    if uid not in (0, owner):
        return f"process {pid} belongs to another user"
    return None


class LocalCapture:
    def __init__(self) -> None:
        self.pids: set[int] = set()
        self.shimmed = False

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get(md.INTERNAL) != CAPTURE_ENDPOINT or flow.response is not None:
            return
        peer = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        pid = flow.request.query.get("pid", "")
        if not netaddr.is_loopback(peer):
            return self._answer(flow, 403, "corral: loopback only")
        if flow.request.method not in ("POST", "DELETE") or not pid.isdigit():
            return self._answer(flow, 400, "corral: POST or DELETE /_corral/capture?pid=N")
        if flow.request.method == "DELETE":
            self.pids.discard(int(pid))
            await self._apply()
            return self._answer(flow, 200, "released")
        reason = unavailable()
        if reason:
            return self._answer(flow, 503, f"local capture is not available: {reason}")
        refused = may_capture(flow, int(pid))
        if refused:
            return self._answer(flow, 403, refused)
        if not self.shimmed:
            install_sudo_shim()
            self.shimmed = True
        self.pids.add(int(pid))
        if not await self._apply():
            self.pids.discard(int(pid))
            await self._apply()
            return self._answer(flow, 503, "local capture is not available: mitmproxy's local redirector did "
                                           "not start (its reason is in the gateway's log)")
        return self._answer(flow, 200, "capturing")

    async def _apply(self) -> bool:
        """Set mitmproxy's modes to the gateway's own plus one local mode for every captured process;
        True once the redirector runs (or none is wanted)."""
        from mitmproxy.proxy.mode_servers import LocalRedirectorInstance

        modes = [m for m in ctx.options.mode if not m.startswith("local")]
        if self.pids:
            modes.append("local:" + ",".join(str(p) for p in sorted(self.pids)))
        ctx.options.update(mode=modes)
        proxyserver = ctx.master.addons.get("proxyserver")
        # The servers are updated by a task of mitmproxy's own: wait until it is done with these modes.
        for _ in range(1000):
            running = {server.mode.full_spec for server in proxyserver.servers}
            if running == set(modes) and not proxyserver.servers.is_updating:
                break
            await asyncio.sleep(0.01)
        return not self.pids or LocalRedirectorInstance._instance is not None

    def done(self) -> None:
        # mitmproxy keeps the redirector process for later captures and leaves it running when it exits
        # (measured: still there after the gateway had gone). It is this process's child (sudo, or the
        # shim exec'ing into it): stop it.
        from mitmproxy.proxy.mode_servers import LocalRedirectorInstance

        if LocalRedirectorInstance._server is None:
            return
        LocalRedirectorInstance._server.close()
        for pid in redirector_children():
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass

    @staticmethod
    def _answer(flow: http.HTTPFlow, status: int, text: str) -> None:
        key = "status" if status == 200 else "error"
        flow.response = http.Response.make(status, json.dumps({key: text}), {"content-type": "application/json"})
