"""Settings shared by every command, resolved the same way so `corral start`, `corral flows`,
`corral env` ... always agree on the listen address, database and certificates."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mitmproxy import exceptions

from addon import config, paths


def add_config_args(parser: argparse.ArgumentParser, listen: bool = False, db: bool = True) -> None:
    parser.add_argument("--config", metavar="FILE", help="corral.toml (default: ./corral.toml, else the checkout's)")
    if listen:
        parser.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:8080)")
    if db:
        parser.add_argument("--db", metavar="URL", help=f"database URL (default {paths.default_db_url()})")


def add_certs_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--certs", metavar="DIR",
                        help=f"CA directory, mitmproxy's confdir (default {paths.default_certs_dir()})")


def config_path(args: argparse.Namespace) -> Path | None:
    """--config FILE, else the default file; ``--config -`` means none (as the corral_config option)."""
    value = getattr(args, "config", None)
    if value == "-":
        return None
    return Path(value).expanduser() if value else paths.default_config_file()


def file_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Options from the config file named by --config (or found by default)."""
    path = config_path(args)
    if path is None:
        return {}
    settings = config.toml_to_options(config.read_file(path))
    certs = settings.get("corral_gateway_certs")
    if certs:  # relative to the file that says it, so every command finds it whatever the cwd
        settings["corral_gateway_certs"] = str((path.resolve().parent / Path(certs).expanduser()).resolve())
    return settings


def sources(args: argparse.Namespace) -> dict[str, str]:
    """Where each setting of ``resolve(args)`` came from, for error messages: ``"<file>: [cache] ttl"``
    or the flag (``"--db"``)."""
    out: dict[str, str] = {}
    path = config_path(args)
    if path is not None and path.is_file():
        try:
            where = config.locations(config.read_file(path))
        except exceptions.OptionsError:
            where = {}
        out = {name: f"{path}: {loc}" for name, loc in where.items()}
        out["corral_config"] = str(path)
    for flag, name in (("listen", "corral_gateway_listen"), ("db", "corral_storage_db"),
                       ("certs", "corral_gateway_certs")):
        if getattr(args, flag, None):
            out[name] = f"--{flag}"
    return out


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """File settings overlaid with command-line flags."""
    try:
        settings = file_settings(args)
    except exceptions.OptionsError as e:
        raise SystemExit(f"corral: {e}") from None
    if getattr(args, "listen", None):
        settings["corral_gateway_listen"] = args.listen
    if getattr(args, "db", None):
        settings["corral_storage_db"] = args.db
    if settings.get("corral_storage_db"):  # a plain path is a SQLite file
        settings["corral_storage_db"] = db_url(settings)
    if getattr(args, "certs", None):
        settings["corral_gateway_certs"] = str(Path(args.certs).expanduser().resolve())
    return settings


def db_url(settings: dict[str, Any]) -> str:
    from addon.storage.db import normalise_url

    return normalise_url(settings.get("corral_storage_db") or paths.default_db_url())


def listen(settings: dict[str, Any]) -> str:
    return settings.get("corral_gateway_listen") or "127.0.0.1:8080"


def certs_dir(settings: dict[str, Any]) -> Path:
    """The CA directory (mitmproxy's confdir): --certs, else [gateway] certs, else the default."""
    return Path(settings.get("corral_gateway_certs") or paths.default_certs_dir())
