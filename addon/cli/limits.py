"""`corral limits`: each configured rate limit and its current use, asked from the running gateway.

The windows live in the gateway process (or in the shared [state] store), so the command asks the
gateway's in-band endpoint ``GET http://<listen>/_corral/limits`` (loopback clients only).
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request

from addon.cli import common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("limits", help="show configured rate limits and their current use (asks the running gateway)")
    common.add_config_args(p, listen=True, db=False)
    p.add_argument("--json", action="store_true", help="the gateway's raw JSON report")
    p.set_defaults(func=run)


def endpoint(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"  # a wildcard listener is reachable on loopback
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/_corral/limits"


def fetch(url: str) -> dict:
    # No proxy: the gateway is local, and an HTTPS_PROXY in the environment may be the gateway itself.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        return json.load(resp)


def table(report: dict) -> str:
    headers = ["limit", "per", "behaviour", "window", "bucket", "used", "queued", "full for"]
    rows = []
    for limit in report.get("limits", []):
        per = ",".join(limit["per"])
        behaviour = limit["behaviour"] + (f" ({limit['max_wait']:g}s)" if limit["behaviour"] == "queue" else "")
        if not limit["buckets"]:
            for window in limit["windows"]:
                rows.append([limit["name"], per, behaviour, window, "(no traffic yet)", "0", "0", "-"])
        for bucket in limit["buckets"]:
            for w in bucket["windows"]:
                full = w["full_for_s"]
                rows.append([
                    limit["name"], per, behaviour, f"{w['limit']} {w['what']} per {w['period']}", bucket["key"],
                    f"{w['used']}/{w['limit']}", str(bucket["queued"]),
                    "-" if not full else f"{full:.1f}s" if full is not None else "never",
                ])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    for hold in report.get("holds", []):
        out.append(f"adaptive hold: {hold['provider']} credential {hold['credential']} for {hold['for_s']:.1f}s more")
    if not report.get("limits"):
        out.append("(no [[limits]] configured)")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    settings = common.resolve(args)
    url = endpoint(common.listen(settings))
    try:
        report = fetch(url)
    except (urllib.error.URLError, OSError, ValueError) as e:
        print(f"corral: could not ask the gateway at {url}: {getattr(e, 'reason', e)} (is `corral start` running?)")
        return 1
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0
