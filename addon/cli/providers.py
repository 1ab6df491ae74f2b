"""`corral providers`: the provider catalog (built-in plus corral.toml overrides)."""

from __future__ import annotations

import argparse
import json

from addon import config
from addon.cli import common
from providers.catalog import Catalog, CatalogError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("providers", help="list the providers Corral routes (reverse prefix, upstream, format, hosts)")
    common.add_config_args(p, db=False)
    p.add_argument("--json", action="store_true", help="one JSON object per provider per line")
    p.add_argument("--markdown", action="store_true", help="the README's provider table")
    p.set_defaults(func=run)


def load_catalog(args: argparse.Namespace) -> Catalog:
    settings = common.resolve(args)
    overrides = config.parse_json_option("corral_providers", settings.get("corral_providers", ""))
    return Catalog.load(overrides)


def run(args: argparse.Namespace) -> int:
    try:
        catalog = load_catalog(args)
    except CatalogError as e:
        print(f"corral: [providers]: {e}")
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
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    print(f"\n{len(rows)} providers")
    return 0
