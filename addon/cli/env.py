"""`corral env`: the environment that turns any HTTP client into an explicit-proxy client of Corral.

    eval "$(corral env)"                      # bash/zsh
    corral env --shell fish | source          # fish
    corral env --shell powershell | iex       # PowerShell

Takes the same --listen/--config/--certs as `corral start`, so both always agree. Creates the CA if
`corral start` has not yet, and (re)writes the bundle: system roots + Corral CA.
"""

from __future__ import annotations

import argparse
import os
import shlex
import urllib.parse
from collections.abc import Mapping
from typing import Any

from addon import ca, client_env, netaddr
from addon.cli import common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="print HTTPS_PROXY/CA variables for explicit-proxy mode (eval \"$(corral env)\")")
    common.add_config_args(p, listen=True, db=False)
    common.add_certs_arg(p)
    p.add_argument("--shell", choices=("sh", "bash", "zsh", "fish", "powershell"), default="sh",
                   help="syntax of the output (default sh: bash, zsh, dash)")
    p.set_defaults(func=run)


def proxy_url(listen: str, proxyauth: str = "") -> str:
    """http://[user:pass@]host:port a client on this machine uses to reach the listener."""
    address = netaddr.local_hostport(*netaddr.parse_hostport(listen))
    userinfo = ""
    user, sep, password = proxyauth.partition(":")
    if sep and not proxyauth.startswith(("@", "ldap")):  # a literal user:pass, not htpasswd/LDAP
        userinfo = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@"
    return f"http://{userinfo}{address}"


def variables(settings: dict[str, Any], proxy: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    files = ca.ensure_ca(common.certs_dir(settings))
    return client_env.variables(files, proxy, os.environ if base is None else base)


def render(env: dict[str, str], shell: str) -> str:
    if shell == "fish":
        lines = [f"set -gx {k} {shlex.quote(v)};" for k, v in env.items()]
    elif shell == "powershell":
        lines = [f"$env:{k} = '{v.replace(chr(39), chr(39) * 2)}'" for k, v in env.items()]
    else:
        lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    settings = common.resolve(args)
    try:
        proxy = proxy_url(common.listen(settings), settings.get("corral_gateway_proxyauth") or "")
    except ValueError as e:
        print(f"corral: --listen {e}")
        return 2
    print(render(variables(settings, proxy), args.shell))
    return 0
