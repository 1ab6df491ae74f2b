"""`corral start`: mitmproxy's DumpMaster with Corral's addon chain on one regular-mode listener."""

from __future__ import annotations

import asyncio
import gc
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
from addon.config_reload import ConfigReload
from addon.recorder import Recorder
from addon.viewer.server import Viewer

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


class StartupError(Exception):
    """A setting `corral start` cannot run with: one line naming where it came from."""


def _apply_settings(opts: options.Options, settings: dict[str, Any], sources: dict[str, str],
                    base: dict[str, Any]) -> None:
    """Settings from corral.toml and the flags, each error naming its source (file and key, or flag).
    ``base`` (Corral's own defaults for mitmproxy options) goes with the first group: an addon may refuse
    a state that a later setting of the same file would have allowed, so nothing is applied alone."""
    grouped: dict[str, dict[str, Any]] = {}
    for name, value in config.coerce_options(opts, settings).items():
        grouped.setdefault(sources.get(name, "").partition(": ")[0], {})[name] = value
    for values in grouped.values():
        for name, value in values.items():
            if name not in opts:
                where = sources.get(name, name)
                label = {name: where.partition(": ")[2] or where}
                raise StartupError(f"{where}: unknown setting{config.suggest_setting(name, label, opts.keys())}")
            if problem := config.type_error(opts, name, value):
                raise StartupError(f"{sources.get(name, name)}: {problem}")
    first = next(iter(grouped), "")
    grouped.setdefault(first, {})
    for source, values in grouped.items():
        try:
            opts.update(**(base | values if source == first else values))
        except exceptions.OptionsError as e:
            raise StartupError(f"{source}: {e}" if source else str(e)) from None


def _apply_specs(opts: options.Options, specs: list[str]) -> None:
    """``--set name=value``, parsed by mitmproxy exactly as mitmdump would; errors say which one."""
    for spec in specs:
        name, _, value = spec.partition("=")
        if name not in opts:
            hint = config.suggest_option(name, opts.keys())
            if not hint:
                hint = ("; `corral start` loads only the mitmproxy addons a gateway needs: for others "
                        "(modify_headers, map_local, ...) run mitmdump -s addon/corral.py (see README)")
            raise StartupError(f"--set {spec}: unknown option{hint}")
        try:
            opts.set(spec)
        except exceptions.OptionsError as e:
            if str(e).startswith("Failed to parse option"):
                spec_type = opts._options[name].typespec
                raise StartupError(f"--set {spec}: expected {config.expected(spec_type)}, got {value!r}") from None
            raise StartupError(f"--set {spec}: {e}") from None


class Banner:
    """Prints what `corral start` serves once it really does: the listener is bound, the viewer (if
    any) is up and no error was logged. Added after Corral's chain, so its ``running`` comes last."""

    def __init__(self, gateway: master.Master, viewer: Viewer | None, lines: list[str]) -> None:
        self.gateway, self.viewer, self.lines = gateway, viewer, lines

    def running(self) -> None:
        check = self.gateway.addons.get("errorcheck")
        if check is not None and check.logger.has_errored:
            return  # mitmproxy exits right after this hook
        lines = list(self.lines)
        if self.viewer is not None and self.viewer.bound is not None:
            host, port = self.viewer.bound
            lines.append(f"corral: viewer on http://{netaddr.local_hostport(host, port)}/")
        for line in lines:
            print(line, flush=True)


def _configure(
    listen: tuple[str, int], settings: dict[str, Any], specs: list[str], certs_dir: str,
    sources: dict[str, str] | None = None, banner: list[str] | None = None,
) -> tuple[GatewayMaster, chain.Chain]:
    """The master with every setting applied; StartupError names the first one refused."""
    _setup_logging()
    opts = options.Options(
        listen_host=listen[0], listen_port=listen[1], mode=["regular"], confdir=certs_dir,
    )
    gateway = GatewayMaster(opts)
    # Quiet before any option is applied: a setting refused later rolls the others back, and the
    # rollback's "recording to ..." would read as if the gateway had started.
    opts.update(termlog_verbosity="warn")
    corral = chain.addon()
    reloader = next((c for c in corral.children if isinstance(c, ConfigReload)), None)
    if reloader is not None:  # the command line wins over the file, also when the file changes later
        reloader.pinned = {s.partition("=")[0] for s in specs} | {
            name for name, source in (sources or {}).items() if source.startswith("--")}
    gateway.addons.add(corral)
    viewer = next((c for c in corral.children if isinstance(c, Viewer)), None)
    gateway.addons.add(Banner(gateway, viewer, banner or []))
    # Addon-defined options exist only now; passing them to Options() would raise KeyError.
    _apply_settings(opts, settings, sources or {}, {"connection_strategy": "lazy"})
    _apply_specs(opts, specs)
    # mitmproxy tells addons added this way only about options that change, while a `-s` script's
    # addons are configured with every option. Do the same for the ones still at their defaults, so
    # e.g. the default database is opened and allow_hosts is set with no config file at all.
    already = set(settings) | {"connection_strategy", "termlog_verbosity"} | {s.partition("=")[0] for s in specs}
    try:
        gateway.addons.trigger(hooks.ConfigureHook(set(opts.keys()) - already))
    except exceptions.OptionsError as e:
        raise StartupError(str(e)) from None
    return gateway, corral


async def _check(*args: Any) -> None:
    gateway, _ = _configure(*args)
    await gateway.done()  # the record writer and other services configure started


async def _run(*args: Any) -> int:
    gateway, corral = _configure(*args)
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
    reloader = next((c for c in corral.children if isinstance(c, ConfigReload)), None)
    if reloader is not None:  # before the listener opens: an early SIGHUP must not end the process
        loop.add_signal_handler(signal.SIGHUP, reloader.on_sighup)
    # What is alive now (mitmproxy, the providers' catalog, prices, the chain: ~120,000 objects) lives as
    # long as the process: out of the garbage collector's sight, a full collection walks only the flows'
    # objects (~90 ms -> ~10 ms of one pause on the event loop, measured under load).
    gc.freeze()
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


def check(
    listen: str, settings: dict[str, Any], specs: list[str], certs_dir: str, sources: dict[str, str],
) -> int:
    """Apply every setting as `corral start` would, without serving: the supervisor of ``--workers N``
    says what is wrong once, instead of each worker saying it."""
    try:
        asyncio.run(_check(parse_listen(listen), settings, specs, certs_dir, sources))
    except (StartupError, ValueError) as e:
        print(f"corral: {e}")
        return 2
    return 0


def start(
    listen: str, settings: dict[str, Any], specs: list[str] | None = None, certs_dir: str | None = None,
    sources: dict[str, str] | None = None, banner: list[str] | None = None,
) -> int:
    """Run the gateway. ``sources`` says where each setting came from (``"/x/corral.toml: [cache] ttl"``,
    ``"--db"``), for error messages; ``banner`` is printed once the gateway serves."""
    certs = certs_dir or str(paths.default_certs_dir())
    try:
        return asyncio.run(_run(parse_listen(listen), settings, specs or [], certs, sources, banner))
    except (StartupError, ValueError) as e:
        print(f"corral: {e}")
        return 2
