"""`corral run -- CMD ARGS...`: run a program with everything it needs to go through the running gateway.

The program gets what `corral env` prints (proxy and trust variables for Python, curl, Go, Node.js,
Java ...; for Node a preload that makes fetch use the proxy). Before and after, `corral run` asks the
gateway how many provider requests it has seen (`/_corral/flows`): none during the run means the
program's LLM calls, if it made any, went around Corral, and it says which variable that client most
likely ignores. `--capture` redirects the program's connections instead (mitmproxy's local capture
mode), for programs that ignore proxy settings altogether (addon/cli/capture.py).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from addon import ca, client_env, netaddr
from addon.cli import common, env

FLOWS_PATH = "/_corral/flows"
NODE_WORDS = frozenset({"node", "npm", "npx", "pnpm", "yarn", "tsx", "ts-node", "bun", "deno"})
JAVA_WORDS = frozenset({"java", "gradle", "gradlew", "mvn", "mvnw", "kotlin", "sbt"})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a program with its HTTP clients sent through Corral (corral run -- CMD ...)")
    common.add_config_args(p, listen=True, db=False)
    common.add_certs_arg(p)
    p.add_argument("--capture", action="store_true",
                   help="capture the program's connections without proxy settings (mitmproxy local mode; "
                        "needs root or passwordless sudo, Linux/macOS/Windows)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="do not warn when the gateway saw no request from the program")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the program to run")
    p.set_defaults(func=run)


class Gateway:
    """The running gateway as `corral run` sees it: its address, and its /_corral/flows counter."""

    def __init__(self, listen: str, proxyauth: str) -> None:
        self.host, self.port = netaddr.parse_hostport(listen)
        self.host = netaddr.WILDCARDS.get(self.host, self.host)  # a wildcard listener is reached on loopback
        self.headers = {}
        user, sep, password = proxyauth.partition(":")
        if sep and not proxyauth.startswith(("@", "ldap")):
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers["proxy-authorization"] = f"Basic {token}"

    def listening(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=2):
                return True
        except OSError:
            return False

    def call(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, headers=self.headers)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = {}
        return resp.status, data if isinstance(data, dict) else {}

    def seen(self) -> int | None:
        """Provider requests this gateway has seen; None when it cannot tell (an older gateway, or several
        workers: each counts only its own connections)."""
        try:
            status, data = self.call("GET", FLOWS_PATH)
        except OSError:
            return None
        if status != 200 or not isinstance(data.get("seen"), int) or data.get("worker"):
            return None
        return data["seen"]


def ignored_variable(command: list[str]) -> str:
    """What the program's HTTP client most likely ignored, guessed from the command line."""
    # The first few words: the runtime may follow a wrapper (env, time, uv run, poetry run ...).
    words = [Path(w).name.lower() for w in command[:6]]
    if any(w in NODE_WORDS or w.endswith((".js", ".mjs", ".cjs", ".ts")) for w in words):
        return ("NODE_OPTIONS (Corral's preload makes Node's fetch use HTTPS_PROXY; a program that resets "
                "NODE_OPTIONS, bundles its own undici, or gives its HTTP client an agent of its own "
                "ignores it)")
    if any(w in JAVA_WORDS or w.endswith(".jar") for w in words):
        return ("JAVA_TOOL_OPTIONS (-Dhttps.proxyHost: a java.net.http.HttpClient built with "
                ".proxy(HttpClient.Builder.NO_PROXY), or OkHttp/Netty clients with their own proxy setting, "
                "ignore it)")
    if any(w.startswith("python") or w.endswith(".py") for w in words):
        return ("HTTPS_PROXY (an httpx client made with trust_env=False, or aiohttp without trust_env=True, "
                "ignores it)")
    return "HTTPS_PROXY (the program's HTTP client does not read it)"


def _spawn(command: list[str], environ: dict[str, str]) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(command, env=environ)
    except FileNotFoundError:
        raise SystemExit(f"corral: {command[0]}: command not found") from None
    except PermissionError:
        raise SystemExit(f"corral: {command[0]}: permission denied") from None


def wait(proc: subprocess.Popen[bytes]) -> int:
    """The program's exit status, shell style (128 + signal). Ctrl-C reaches it through the terminal's
    process group; SIGTERM to `corral run` is passed on."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
    try:
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:
                continue  # the program got the same SIGINT; its exit status decides
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 128 - code if code < 0 else code


def run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("corral: usage: corral run [--capture] -- CMD ARGS...", file=sys.stderr)
        return 2
    settings = common.resolve(args)
    listen = common.listen(settings)
    proxyauth = settings.get("corral_gateway_proxyauth") or ""
    try:
        proxy = env.proxy_url(listen, proxyauth)
        gateway = Gateway(listen, proxyauth)
    except ValueError as e:
        print(f"corral: --listen {e}", file=sys.stderr)
        return 2
    if not gateway.listening():
        print(f"corral: no gateway is listening on {listen}: start it with `corral start` (same --listen/--config), "
              "then run this again", file=sys.stderr)
        return 2
    files = ca.ensure_ca(common.certs_dir(settings))
    if args.capture:
        from addon.cli.capture import run as run_captured

        return run_captured(gateway, files, command)
    environ = {**os.environ, **client_env.variables(files, proxy, os.environ)}
    before = gateway.seen() if args.check else None
    code = wait(_spawn(command, environ))
    if before is not None and gateway.seen() == before:
        shown = shlex.join(command)
        shown = shown if len(shown) <= 60 else shown[:59] + "…"
        print(f"corral: the gateway saw no LLM request from `{shown}`. If it called a provider, "
              f"the call went around Corral: its client most likely ignores {ignored_variable(command)}. "
              "Try `corral run --capture -- ...`, or point the client at "
              f"http://{listen}/<provider>/... (reverse mode).", file=sys.stderr)
    return code
