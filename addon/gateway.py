"""`corral start`: mitmproxy's DumpMaster with Corral's addon chain on one regular-mode listener."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from mitmproxy import exceptions, hooks, options
from mitmproxy.tools.dump import DumpMaster

from addon import chain, config, paths


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _setup_logging() -> None:
    # As mitmdump does: the root logger passes everything, mitmproxy's TermLog filters by verbosity.
    logging.getLogger().setLevel(logging.DEBUG)
    for noisy in ("tornado", "asyncio", "hpack", "quic", "peewee", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _run(listen: tuple[str, int], settings: dict[str, Any], specs: list[str], certs_dir: str) -> int:
    _setup_logging()
    opts = options.Options(
        listen_host=listen[0], listen_port=listen[1], mode=["regular"], confdir=certs_dir,
    )
    master = DumpMaster(opts, with_termlog=True, with_dumper=False)
    master.addons.add(chain.addon())
    # Addon-defined options exist only now; passing them to Options() would raise KeyError.
    opts.update(connection_strategy="lazy", termlog_verbosity="warn", **config.coerce_options(opts, settings))
    if specs:  # --set name=value, parsed by mitmproxy exactly as mitmdump would
        opts.set(*specs)
    # mitmproxy tells addons added this way only about options that change, while a `-s` script's
    # addons are configured with every option. Do the same for the ones still at their defaults, so
    # e.g. the default database is opened and allow_hosts is set with no config file at all.
    already = set(settings) | {"connection_strategy", "termlog_verbosity"} | {s.partition("=")[0] for s in specs}
    master.addons.trigger(hooks.ConfigureHook(set(opts.keys()) - already))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    await master.run()
    return 0


def start(listen: str, settings: dict[str, Any], specs: list[str] | None = None, certs_dir: str | None = None) -> int:
    certs = certs_dir or str(paths.default_certs_dir())
    try:
        return asyncio.run(_run(parse_listen(listen), settings, specs or [], certs))
    except (exceptions.OptionsError, ValueError) as e:
        print(f"corral: {e}")
        return 2
    except KeyError as e:
        print(f"corral: unknown setting {e} (see `corral start --help` and addon/config.py)")
        return 2
