"""`corral start`."""

from __future__ import annotations

import argparse

from addon import ca, cli_common, paths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("start", help="start the gateway (reverse and explicit-proxy mode on one port)")
    cli_common.add_config_args(p, listen=True)
    cli_common.add_certs_arg(p)
    p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                   help="any mitmproxy or corral_* option, like mitmdump's --set")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from addon import gateway  # mitmproxy's master: imported only here, so other commands start fast

    settings = cli_common.resolve(args)
    # The gateway's own ConfigFile addon reads the same file; "-" tells it there is none.
    found = paths.default_config_file()
    settings["corral_config"] = args.config or (str(found) if found else "-")
    listen = cli_common.listen(settings)
    print(f"corral: starting on http://{listen}  (reverse mode: http://{listen}/<provider>/...)", flush=True)
    print(f"corral: recording to {cli_common.db_url(settings)}", flush=True)
    certs = ca.ensure_ca(cli_common.certs_dir(settings)).confdir  # before listening: clients may fetch it at once
    print(f"corral: explicit proxy on http://{listen}  (eval \"$(corral env)\"; CA in {certs})", flush=True)
    return gateway.start(listen, settings, args.set, str(certs))
