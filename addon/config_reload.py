"""ConfigReload: corral.toml changes applied to the running gateway, without a restart.

The file is watched by polling its stat (size, mtime, inode) every ``[config] reload_interval`` seconds
on a worker thread, and re-read on SIGHUP. A change is applied through ``ctx.options.update``: every
addon's ``configure`` sees it as it saw the start-up values. mitmproxy rolls the whole update back when
any addon refuses a value (OptionsError), so an invalid file changes nothing: one line in the log says
why, and the running configuration stays. Options are not connections: flows in flight, open streams
included, go on; new flows use the new settings.

Only what the file itself set is reloaded: an option that a flag or ``--set`` gave another value keeps
it (the command line wins over the file, at start and after). With ``--workers N`` each worker watches
the file and reloads itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions, http

from addon import config, metadata as md, netaddr, paths

logger = logging.getLogger(__name__)

# Settings a running gateway cannot take: where it listens, its processes, its CA directory.
RESTART_ONLY = frozenset({
    "corral_config", "corral_gateway_listen", "corral_gateway_workers", "corral_gateway_worker_startup_grace",
    "corral_gateway_certs", "corral_config_reload_interval",
})
MISSING = object()
RELOAD_ENDPOINT = "/reload"  # POST http://<listen>/_corral/reload: `corral reload` (loopback clients only)


def file_values(path: Path, options: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """{option: value} of the file, checked as at start; OptionsError with the start's one-line message."""
    data = config.read_file(path)
    values, where = config.toml_to_options(data), config.locations(data)
    unknown = sorted(name for name in values if name not in options)
    if unknown:
        name = unknown[0]
        raise exceptions.OptionsError(
            f"{path}: unknown setting {where.get(name, name)}{config.suggest_setting(name, where, options.keys())}")
    values = config.coerce_options(options, values)
    config.check_types(options, values, where, str(path))
    return values, where


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class ConfigReload:
    def __init__(self) -> None:
        self.path: Path | None = None
        self.applied: dict[str, Any] = {}  # what the file said when last applied
        self.where: dict[str, str] = {}  # option -> "[section] key" of the file when last applied
        self.pinned: set[str] = set()  # options the command line set (`corral start` flags, --set): kept
        self.seen: tuple[int, int, int] | None = None
        self.task: asyncio.Task[None] | None = None
        self.sighup_task: asyncio.Task[tuple[bool, str]] | None = None
        self.lock = asyncio.Lock()
        self.reloads = 0  # successful reloads, for tests and the log

    def load(self, loader) -> None:
        loader.add_option(
            "corral_config_reload_interval", str, "1",
            "Seconds between checks of corral.toml for changes, applied without a restart (SIGHUP reloads "
            "at once); 0: only on SIGHUP.",
        )

    def configure(self, updated: set[str]) -> None:
        if "corral_config_reload_interval" in updated:
            try:
                interval = float(ctx.options.corral_config_reload_interval)
            except ValueError:
                interval = -1.0
            if interval < 0:
                raise exceptions.OptionsError("[config] reload_interval: expected seconds (0 or more), got "
                                              f"{ctx.options.corral_config_reload_interval!r}")
        if "corral_config" in updated:
            self._baseline()

    def running(self) -> None:
        if self.path is None:
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread, Windows
            loop.add_signal_handler(signal.SIGHUP, self.on_sighup)
        self.task = loop.create_task(self._watch())

    def _baseline(self) -> None:
        """The file as the options were set from it: what a later change is compared with."""
        value = ctx.options.corral_config
        self.path = None if value == "-" else (Path(value).expanduser() if value else paths.default_config_file())
        if self.path is None:
            return
        self.seen = _signature(self.path)
        try:
            self.applied, self.where = file_values(self.path, ctx.options)
        except exceptions.OptionsError:
            self.applied, self.where = {}, {}  # the start refuses it; a mitmdump -s script goes on without it

    def done(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def on_sighup(self) -> None:
        """SIGHUP: reload now (`corral start` installs this before it listens; mitmdump at ``running``)."""
        logger.info("corral: SIGHUP: reloading %s", self.path)
        self.sighup_task = asyncio.get_running_loop().create_task(self.reload())

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get(md.INTERNAL) != RELOAD_ENDPOINT or flow.response is not None:
            return
        peer = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        body: dict[str, object]
        if not netaddr.is_loopback(peer):
            status, body = 403, {"error": "corral: loopback only"}
        elif flow.request.method != "POST":
            status, body = 405, {"error": "corral: POST to reload"}
        elif self.path is None:
            status, body = 409, {"reloaded": False, "message": "no configuration file to reload"}
        else:
            ok, message = await self.reload()
            status, body = (200 if ok else 422), {"reloaded": ok, "message": message}
        flow.response = http.Response.make(status, json.dumps(body), {"content-type": "application/json"})

    async def _watch(self) -> None:
        assert self.path is not None
        while True:
            interval = float(ctx.options.corral_config_reload_interval)
            await asyncio.sleep(interval if interval > 0 else 3600)
            if interval <= 0:
                continue
            signature = await asyncio.to_thread(_signature, self.path)
            if signature is not None and signature != self.seen:
                await self.reload()

    async def reload(self) -> tuple[bool, str]:
        """Re-read the file and apply what changed: (True, what changed), or (False, why) with the old
        settings kept."""
        if self.path is None:
            return False, "no configuration file"
        async with self.lock:
            path = self.path
            self.seen = await asyncio.to_thread(_signature, path)
            try:
                values, where = await asyncio.to_thread(file_values, path, ctx.options)
                changes = self._changes(values)
                if changes:
                    ctx.options.update(**changes)
            except exceptions.OptionsError as e:
                logger.error("corral: reload refused, the running configuration stays: %s", e)
                return False, f"reload refused, the running configuration stays: {e}"
            shown = self.where | where
            self.applied, self.where = values, where
            self.reloads += 1
            names = ", ".join(config.where_of(n, shown.get(n, n)) for n in sorted(changes)) or "nothing"
            logger.warning("corral: configuration reloaded from %s: %s", path, names)
            return True, f"configuration reloaded from {path}: {names}"

    def _changes(self, values: dict[str, Any]) -> dict[str, Any]:
        opts = ctx.options._options
        out: dict[str, Any] = {}
        restart: list[str] = []
        for name in values.keys() | self.applied.keys():
            new = values.get(name, MISSING)
            old = self.applied.get(name, MISSING)
            if new == old or name not in opts or name in self.pinned:
                continue
            option = opts[name]
            # The command line wins: skip an option whose value is neither the file's last one nor the default.
            if option.current() != (option.default if old is MISSING else old):
                continue
            if name in RESTART_ONLY:
                restart.append(name)
                continue
            out[name] = option.default if new is MISSING else new
        if restart:
            logger.warning("corral: %s changed in the file; it applies at the next start", ", ".join(sorted(restart)))
        return out
