"""`corral paths`: where this installation keeps its files, and the script mitmproxy loads.

    mitmweb -s "$(corral paths --script)" ...      # the same on a checkout and on a pip install

Takes the same --config/--db/--certs as `corral start`, so it shows what `corral start` would use.
"""

from __future__ import annotations

import argparse

from addon import paths
from addon.cli import common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("paths", help="show the config file, database, CA directory and mitmproxy script in use")
    common.add_config_args(p)
    common.add_certs_arg(p)
    p.add_argument("--script", action="store_true",
                   help="print only the mitmproxy script's path (for mitmdump -s / mitmweb -s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.script:
        print(paths.mitmproxy_script())
        return 0
    settings = common.resolve(args)
    config = common.config_path(args)
    print(f"config:    {config if config else '(none found)'}")
    print(f"database:  {common.db_url(settings)}")
    print(f"certs:     {common.certs_dir(settings)}")
    print(f"script:    {paths.mitmproxy_script()}  (mitmdump -s / mitmweb -s)")
    print(f"viewer:    {paths.web_dir()}")
    return 0
