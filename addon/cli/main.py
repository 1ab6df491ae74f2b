"""The `corral` command. Each sub-command lives in its own module with a `register(subparsers)`."""

from __future__ import annotations

import argparse
import sys

from addon.cli import (
    cache,
    certs,
    env,
    export,
    fixtures,
    flows,
    keys,
    limits,
    paths,
    providers,
    reload as reload_cmd,
    run,
    spend,
    start,
    stats,
)

COMMANDS = [start, run, flows, providers, env, certs, keys, limits, cache, stats, spend, export, fixtures, paths,
            reload_cmd]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="corral", description="LLM gateway built on mitmproxy.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `corral flows | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
