"""`corral reload`: the running gateway re-reads its corral.toml now (as SIGHUP does).

It asks the gateway's in-band endpoint ``POST http://<listen>/_corral/reload`` (loopback clients only)
and prints its one-line answer: what changed, or why the file was refused (the old settings stay).
With ``--workers N`` the worker that takes the request reloads at once; the others see the file change
within ``[config] reload_interval``.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request

from addon import netaddr
from addon.cli import common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reload", help="make the running gateway re-read corral.toml (no restart, streams go on)")
    common.add_config_args(p, listen=True, db=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = common.resolve(args)
    try:
        url = f"http://{netaddr.local_hostport(*netaddr.parse_hostport(common.listen(settings)))}/_corral/reload"
    except ValueError as e:
        print(f"corral: --listen {e}")
        return 2
    # No proxy: the gateway is local, and an HTTPS_PROXY in the environment may be the gateway itself.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, data=b"", method="POST"), timeout=30) as resp:
            answer = json.load(resp)
    except urllib.error.HTTPError as e:
        try:
            answer = json.load(e)
        except ValueError:
            answer = {"reloaded": False, "message": f"HTTP {e.code}"}
    except (urllib.error.URLError, OSError, ValueError) as e:
        print(f"corral: could not ask the gateway at {url}: {getattr(e, 'reason', e)} (is `corral start` running?)")
        return 1
    print(f"corral: {answer.get('message') or answer.get('error')}")
    return 0 if answer.get("reloaded") else 1
