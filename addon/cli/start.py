"""`corral start`."""

from __future__ import annotations

import argparse
import errno
import os
import signal
from typing import Any

from addon import ca, paths, workers
from addon.cli import common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("start", help="start the gateway (reverse and explicit-proxy mode on one port)")
    common.add_config_args(p, listen=True)
    common.add_certs_arg(p)
    p.add_argument("--workers", type=int, metavar="N",
                   help="gateway processes sharing the port and the database (default 1; [gateway] workers)")
    p.add_argument("--mode", choices=["passthrough", "record", "replay", "replay-or-record"],
                   help="record/replay fixtures ([fixtures] mode; default passthrough)")
    p.add_argument("--fixtures", metavar="PATH", help="fixture set: a .yaml file or a directory ([fixtures] path)")
    p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                   help="any mitmproxy or corral_* option, like mitmdump's --set")
    p.set_defaults(func=run)


def _worker_args(args: argparse.Namespace, listen: str, db: str, certs: str, viewer: bool = True) -> list[str]:
    """The command line of one worker: the same settings, one process; ``viewer=False`` turns it off."""
    out = ["start", "--workers", "1", "--listen", listen, "--db", db, "--certs", certs]
    if args.config:
        out += ["--config", args.config]
    for spec in args.set:
        if viewer or not spec.startswith("corral_viewer_listen="):
            out += ["--set", spec]
    return out if viewer else [*out, "--set", "corral_viewer_listen="]


def _start_workers(args: argparse.Namespace, count: int, listen: str, db: str, certs: str, grace: float) -> int:
    from addon.storage import db as dbmod

    if (problem := _listen_problem(listen)) is not None:
        print(problem)
        return 2
    try:  # schema migrations once, before any worker writes
        dbmod.connect(db).close()
    except dbmod.DatabaseError as e:
        print(f"corral: {e}")
        return 2
    from addon import gateway

    settings = {**common.resolve(args), "corral_config": _config_option(args)}
    if gateway.check(listen, settings, args.set, certs, common.sources(args)) != 0:
        return 2
    print(f"corral: {count} workers (SO_REUSEPORT), supervisor pid {os.getpid()}; worker 1 says when it serves",
          flush=True)
    # The viewer reads the shared record: one is enough (worker 1), the others leave its port alone.
    return workers.Supervisor(count, _worker_args(args, listen, db, certs),
                              _worker_args(args, listen, db, certs, viewer=False), grace).run()


def _listen_problem(listen: str) -> str | None:
    """Why the gateway cannot listen on ``listen``, in Corral's words (mitmproxy's own hint is about its
    --mode syntax, which `corral start` does not take), or None."""
    from addon import gateway

    try:
        host, port = gateway.parse_listen(listen)
    except ValueError as e:
        return f"corral: {e}"
    try:
        workers.check_port_free(host, port)
    except OSError as e:
        reason = "address already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        return (f"corral: cannot listen on {listen}: {reason}; choose another address with --listen HOST:PORT "
                "or [gateway] listen in corral.toml")
    return None


def banner(listen: str, settings: dict, certs: str) -> list[str]:
    return [
        f"corral: serving on http://{listen}  (reverse mode: http://{listen}/<provider>/...)",
        f"corral: recording to {common.db_url(settings)}",
        f"corral: explicit proxy on http://{listen}  (eval \"$(corral env)\"; CA in {certs})",
    ]


def _number(settings: dict, name: str, default: float, kind: type) -> Any:
    value = settings.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and isinstance(value, float)):
        raise ValueError(name)
    return kind(value)


def _config_option(args: argparse.Namespace) -> str:
    """The gateway's own ConfigFile addon reads the same file; "-" tells it there is none."""
    found = paths.default_config_file()
    return args.config or (str(found) if found else "-")


def run(args: argparse.Namespace) -> int:
    if hasattr(signal, "SIGHUP"):  # a reload asked for while still starting must not end the process
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the gateway's loop takes SIGHUP over before it listens
    from addon import gateway  # mitmproxy's master: imported only here, so other commands start fast

    settings = common.resolve(args)
    # --mode/--fixtures are [fixtures] settings; like every flag they win over the file.
    fixture_sets = [f"corral_fixtures_mode={args.mode}"] if args.mode else []
    if args.fixtures:
        fixture_sets.append(f"corral_fixtures_path={os.path.abspath(args.fixtures)}")
    args.set = [*fixture_sets, *args.set]
    settings["corral_config"] = _config_option(args)
    listen = common.listen(settings)
    try:
        count = args.workers if args.workers is not None else _number(settings, "corral_gateway_workers", 1, int)
        grace = _number(settings, "corral_gateway_worker_startup_grace", workers.STARTUP_GRACE, float)
    except ValueError as e:
        print(f"corral: {common.sources(args).get(str(e), str(e))}: expected a number, "
              f"got {settings.get(str(e))!r}")
        return 2
    if count < 1:
        print("corral: --workers must be at least 1")
        return 2
    # The CA is made before listening (clients may fetch it at once), and once: not by each worker.
    certs = ca.ensure_ca(common.certs_dir(settings)).confdir
    if count > 1:
        return _start_workers(args, count, listen, common.db_url(settings), str(certs), grace)
    if os.environ.get(workers.REUSE_PORT_ENV) == "1":
        workers.enable_reuse_port()
    elif (problem := _listen_problem(listen)) is not None:
        print(problem)
        return 2
    # Only the first worker says it serves (the supervisor leaves that to it); a lone gateway always does.
    lines = banner(listen, settings, str(certs)) if os.environ.get(workers.WORKER_ENV, "1") == "1" else []
    return gateway.start(listen, settings, args.set, str(certs), common.sources(args), lines)
