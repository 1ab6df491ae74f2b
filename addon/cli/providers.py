"""`corral providers`: the provider catalog the gateway would use (built-in plus corral.toml's
``[providers.<name>]`` tables and ``[gateway] intercept_hosts``)."""

from __future__ import annotations

import argparse
import json

from mitmproxy import exceptions

from addon.cli import common
from addon.cli.table import render_table
from addon.services import catalog_from_options
from providers.catalog import Catalog


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("providers", help="list the providers Corral routes (reverse prefix, upstream, format, hosts)")
    common.add_config_args(p, db=False)
    p.add_argument("--json", action="store_true", help="one JSON object per provider per line")
    p.add_argument("--markdown", action="store_true", help="the README's provider table")
    p.set_defaults(func=run)


def load_catalog(args: argparse.Namespace) -> Catalog:
    settings = common.resolve(args)
    intercept_hosts = settings.get("corral_gateway_intercept_hosts") or []
    catalog, _ = catalog_from_options(settings.get("corral_providers", ""), intercept_hosts)
    return catalog


def run(args: argparse.Namespace) -> int:
    try:
        catalog = load_catalog(args)
    except exceptions.OptionsError as e:
        print(f"corral: {e}")
        return 2
    if args.markdown:
        print(catalog.markdown_table())
        return 0
    rows = catalog.as_rows()
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    headers = ["name", "prefix", "upstream", "format", "auth", "intercepted hosts"]
    lines = [
        [r["name"], "/" + r["prefix"], r["upstream"], r["format"], r["auth"], " ".join(r["hosts"]) or "-"] for r in rows
    ]
    print(render_table(headers, lines))
    print(f"\n{len(rows)} providers")
    return 0
