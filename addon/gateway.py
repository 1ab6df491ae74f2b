"""`corral start`: mitmproxy's DumpMaster with Corral's addon chain on one regular-mode listener."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from mitmproxy import exceptions, hooks, master, options
from mitmproxy.addons import (
    block,
    core,
    disable_h2c,
    errorcheck,
    next_layer,
    proxyauth,
    proxyserver,
    script,
    tlsconfig,
    upstream_auth,
)

from addon import chain, config, netaddr, paths
from addon.recorder import Recorder

CUT_TIMEOUT = 5.0  # seconds the open client connections get to close at shutdown


def parse_listen(value: str) -> tuple[str, int]:
    """``--listen``: an empty host means loopback here, not every interface (mitmproxy's default)."""
    try:
        host, port = netaddr.parse_hostport(value)
    except ValueError as e:
        raise ValueError(f"--listen {e}") from None
    return host or "127.0.0.1", port


def _setup_logging() -> None:
    # As mitmdump does: the root logger passes everything, mitmproxy's TermLog filters by verbosity.
    logging.getLogger().setLevel(logging.DEBUG)
    for noisy in ("tornado", "asyncio", "hpack", "quic", "peewee", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class GatewayMaster(master.Master):
    """mitmproxy's master with only the addons a gateway uses, then Corral's chain.

    Why not DumpMaster: mitmproxy runs every event (about 8 per flow) through every top-level addon,
    even one with no hook for it, so each addon a gateway does not use costs CPU on every flow
    (docs/decisions.md). Kept: the proxy itself (Proxyserver, NextLayer, TlsConfig), access control (Block, ProxyAuth,
    DisableH2C), upstream_auth, extra scripts (`--set scripts=...`), logging and startup error checks.
    Left out: interactive and rewriting features (map/modify/replay/save/intercept...); for those,
    load Corral into mitmdump/mitmweb with `-s addon/corral.py`.
    """

    def __init__(self, opts: options.Options) -> None:
        super().__init__(opts, with_termlog=True)
        self.addons.add(
            core.Core(), block.Block(), disable_h2c.DisableH2C(), proxyauth.ProxyAuth(), proxyserver.Proxyserver(),
            script.ScriptLoader(), next_layer.NextLayer(), tlsconfig.TlsConfig(), upstream_auth.UpstreamAuth(),
            errorcheck.ErrorCheck(),
        )


async def _run(listen: tuple[str, int], settings: dict[str, Any], specs: list[str], certs_dir: str) -> int:
    _setup_logging()
    opts = options.Options(
        listen_host=listen[0], listen_port=listen[1], mode=["regular"], confdir=certs_dir,
    )
    gateway = GatewayMaster(opts)
    corral = chain.addon()
    gateway.addons.add(corral)
    # Addon-defined options exist only now; passing them to Options() would raise KeyError.
    opts.update(connection_strategy="lazy", termlog_verbosity="warn", **config.coerce_options(opts, settings))
    if specs:  # --set name=value, parsed by mitmproxy exactly as mitmdump would
        opts.set(*specs)
    # mitmproxy tells addons added this way only about options that change, while a `-s` script's
    # addons are configured with every option. Do the same for the ones still at their defaults, so
    # e.g. the default database is opened and allow_hosts is set with no config file at all.
    already = set(settings) | {"connection_strategy", "termlog_verbosity"} | {s.partition("=")[0] for s in specs}
    gateway.addons.trigger(hooks.ConfigureHook(set(opts.keys()) - already))
    loop = asyncio.get_running_loop()
    recorder = next((c for c in corral.children if isinstance(c, Recorder)), None)
    stopping: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        if stopping:  # a second signal: stop now
            gateway.shutdown()
        else:
            stopping.append(loop.create_task(_stop(gateway, recorder)))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await gateway.run()
    return 0


async def _stop(gateway: master.Master, recorder: Recorder | None, grace: float = CUT_TIMEOUT) -> None:
    """SIGTERM/SIGINT: stop listening, end the client connections still open, then shut down.

    mitmproxy's own shutdown runs the addons' ``done`` while its listener still accepts and open
    connections still carry data: a request could then be answered after the Recorder's last pass and
    never be recorded, and a stream recorded as aborted could still finish. Ending every connection
    first makes each flow in flight end through the error hook, recorded as cut by the shutdown, before
    any addon is done; a client that connects later is refused, and can retry elsewhere.
    """
    try:
        server: proxyserver.Proxyserver | None = gateway.addons.get("proxyserver")
        if server is not None:
            await server.servers.update([])
            if recorder is not None:
                recorder.stopping = True
            deadline = asyncio.get_running_loop().time() + grace
            while server.connections and asyncio.get_running_loop().time() < deadline:
                # Repeated: a connection accepted just before the listener closed gets its handler late.
                for handler in list(server.connections.values()):
                    io = handler.transports.get(handler.client)
                    if io is not None and io.handler is not None and not io.handler.done():
                        io.handler.cancel("gateway shutting down")
                await asyncio.sleep(0.02)
    finally:
        gateway.shutdown()


def start(listen: str, settings: dict[str, Any], specs: list[str] | None = None, certs_dir: str | None = None) -> int:
    certs = certs_dir or str(paths.default_certs_dir())
    try:
        return asyncio.run(_run(parse_listen(listen), settings, specs or [], certs))
    except (exceptions.OptionsError, ValueError) as e:
        print(f"corral: {e}")
        if "Unknown option" in str(e):
            print("corral: `corral start` loads only the mitmproxy addons a gateway needs; for mitmproxy's "
                  "others (modify_headers, map_local, save_stream_file, ...) run Corral inside mitmdump: "
                  "mitmdump -s addon/corral.py (see README)")
        return 2
    except KeyError as e:
        print(f"corral: unknown setting {e} (see `corral start --help` and addon/config.py)")
        return 2
