"""corral.toml: one TOML file whose every key is also a mitmproxy option.

The mapping is mechanical, so users of ``mitmdump -s`` / ``mitmweb -s`` get every feature:

- ``[section] key = value``  ->  ``--set corral_<section>_<key>=value``
  (``[storage] db = "sqlite:///x.db"`` is ``--set corral_storage_db=sqlite:///x.db``)
- named tables (``[providers.<name>]``, ``[prices."<model>"]``, ``[[limits]]`` ...) -> one option
  holding JSON: ``--set corral_providers='{"openai": {"upstream": "http://127.0.0.1:9001"}}'``

Precedence: an option set on the command line wins over the file; the file wins over defaults.
With no file at all every default works.
"""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions

from addon import paths

logger = logging.getLogger(__name__)

# Sections whose sub-tables are named by the user: each maps to one JSON-valued option.
TABLE_SECTIONS = ("providers", "prices", "limits", "fallbacks")


def option_name(section: str, key: str | None = None) -> str:
    name = f"corral_{section}" if key is None else f"corral_{section}_{key}"
    return name.replace("-", "_")


def toml_to_options(data: dict[str, Any]) -> dict[str, Any]:
    """Flatten a parsed corral.toml into {option name: value}."""
    out: dict[str, Any] = {}
    for section, body in data.items():
        if section in TABLE_SECTIONS:
            out[option_name(section)] = json.dumps(body)
        elif isinstance(body, dict):
            for key, value in body.items():
                if isinstance(value, dict):
                    out[option_name(section, key)] = json.dumps(value)
                else:
                    out[option_name(section, key)] = value
        else:
            raise exceptions.OptionsError(
                f"corral.toml: top-level key {section!r} must be inside a [section]"
            )
    return out


def read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise exceptions.OptionsError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise exceptions.OptionsError(f"config file {path} is not valid TOML: {e}") from None


def parse_json_option(name: str, value: str) -> Any:
    """Value of a JSON-valued table option ("" means empty)."""
    if not value:
        return {}
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise exceptions.OptionsError(f"{name} must be JSON (it mirrors a corral.toml table): {e}") from None


def _coerce(typespec: Any, value: Any) -> Any:
    """TOML numbers and lists for str-typed options (mitmproxy's --set has no float type, so seconds
    like ``ttfb_timeout = 2.5`` are str options): ``2.5`` -> ``"2.5"``, ``[429, 503]`` -> ``"429,503"``."""
    if typespec is str and not isinstance(value, bool):
        if isinstance(value, int | float):
            return str(value)
        if isinstance(value, list) and all(isinstance(v, int | float | str) for v in value):
            return ",".join(str(v) for v in value)
    return value


def coerce_options(options: Any, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with TOML numbers/lists turned into strings where the option is str-typed."""
    known = options._options
    return {name: _coerce(known[name].typespec, v) if name in known else v for name, v in values.items()}


class ConfigFile:
    """Loads corral.toml into the other addons' options. Goes first in the chain."""

    def __init__(self) -> None:
        self.loaded_from: Path | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "corral_config", str, "",
            "Path of corral.toml. Empty: ./corral.toml or the checkout's corral.toml if present; \"-\": none.",
        )
        loader.add_option(
            "corral_gateway_listen", str, "127.0.0.1:8080",
            "HOST:PORT that `corral start` and `corral env` use (under mitmdump use --listen-host/--listen-port).",
        )
        loader.add_option(
            "corral_gateway_workers", int, 1,
            "Gateway processes `corral start` runs on the one port (SO_REUSEPORT), sharing the database.",
        )
        loader.add_option(
            "corral_gateway_worker_startup_grace", int, 10,
            "Seconds after its start in which a worker's failure stops every worker (a startup failure); "
            "a later failure restarts that worker.",
        )

    def configure(self, updated: set[str]) -> None:
        if "corral_config" not in updated:
            return
        value = ctx.options.corral_config
        if value == "-":
            return
        path = Path(value).expanduser() if value else paths.default_config_file()
        if path is None:
            return
        values = toml_to_options(read_file(path))
        unknown = sorted(name for name in values if name not in ctx.options)
        if unknown:
            raise exceptions.OptionsError(
                f"{path}: unknown setting(s): {', '.join(unknown)} "
                "(every key [section] key maps to the option corral_section_key)"
            )
        # Options the user set explicitly (no longer at their default) win over the file.
        to_set = {
            name: _coerce(ctx.options._options[name].typespec, value) for name, value in values.items()
            if ctx.options._options[name].current() == ctx.options._options[name].default
        }
        self.loaded_from = path
        logger.info("corral: configuration from %s", path)
        if to_set:
            ctx.options.update(**to_set)
