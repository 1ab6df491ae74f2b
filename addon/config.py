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

import difflib
import json
import logging
import tomllib
import types
import typing
from collections import abc
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions
from mitmproxy.utils import typecheck

from addon import paths

logger = logging.getLogger(__name__)

# Sections whose sub-tables are named by the user: each maps to one JSON-valued option.
TABLE_SECTIONS = ("providers", "prices", "limits", "fallbacks", "models")


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


def locations(data: dict[str, Any]) -> dict[str, str]:
    """{option name: where corral.toml says it}, e.g. ``corral_cache_ttl`` -> ``[cache] ttl``."""
    out: dict[str, str] = {}
    for section, body in data.items():
        if section in TABLE_SECTIONS or not isinstance(body, dict):
            out[option_name(section)] = f"[{section}]"
        else:
            for key in body:
                out[option_name(section, key)] = f"[{section}] {key}"
    return out


_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def expected(typespec: Any) -> str:
    """What an option of this type takes, in a user's words."""
    if typespec in _TYPE_WORDS:
        return _TYPE_WORDS[typespec]
    if typing.get_origin(typespec) is abc.Sequence:
        return f"a list of {_TYPE_WORDS.get(typing.get_args(typespec)[0], 'values')[2:]}s"
    if typing.get_origin(typespec) in (typing.Union, types.UnionType):
        return " or ".join(expected(t) for t in typing.get_args(typespec) if t is not type(None))
    return typecheck.typespec_to_str(typespec)


def given(value: Any) -> str:
    """A value as the user wrote it, with its TOML kind."""
    kind = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
    shown = json.dumps(value) if isinstance(value, str | int | float | bool) else repr(value)
    return f"{shown[:60]} ({kind})"


def type_error(options: Any, name: str, value: Any) -> str | None:
    """Why ``value`` does not fit option ``name`` ("expected ..., got ..."), or None when it does."""
    spec = options._options[name].typespec
    try:
        typecheck.check_option_type(name, value, spec)
    except TypeError:
        return f"expected {expected(spec)}, got {given(value)}"
    return None


def check_types(options: Any, values: dict[str, Any], where: dict[str, str], source: str) -> None:
    """Raise OptionsError for the first value of the wrong type, naming ``source`` (the file) and the key."""
    for name, value in values.items():
        if name in options._options and (problem := type_error(options, name, value)):
            raise exceptions.OptionsError(f"{source}: {where.get(name, name)}: {problem}")


def suggest_option(name: str, known: abc.Iterable[str]) -> str:
    """`` (did you mean corral_cache_ttl?)`` for a misspelt option name, or ""."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)  # keys, not Options
    return f" (did you mean {close[0]}?)" if close else ""


def suggest_setting(name: str, where: dict[str, str], known: abc.Iterable[str]) -> str:
    """As suggest_option, in the file's own words: ``[cache] tll`` -> `` (did you mean [cache] ttl?)``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean {where_of(close[0], where.get(name, name))}?)" if close else ""


def read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise exceptions.OptionsError(f"config file not found: {path.absolute()}") from None
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


def where_of(option: str, like: str) -> str:
    """``corral_cache_ttl`` shown like ``like`` (``[cache] tll``): ``[cache] ttl``; else the option name."""
    if like.startswith("[") and "] " in like:
        section = like[1:like.index("]")]
        prefix = option_name(section) + "_"
        if option.startswith(prefix):
            return f"[{section}] {option[len(prefix):]}"
    return option


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
        data = read_file(path)
        values, where = toml_to_options(data), locations(data)
        unknown = sorted(name for name in values if name not in ctx.options)
        if unknown:
            name = unknown[0]
            raise exceptions.OptionsError(
                f"{path}: unknown setting {where.get(name, name)}{suggest_setting(name, where, ctx.options.keys())} "
                "(every [section] key is the option corral_section_key; see `corral start --help`)"
            )
        check_types(ctx.options, {n: _coerce(ctx.options._options[n].typespec, v) for n, v in values.items()},
                    where, str(path))
        # Options the user set explicitly (no longer at their default) win over the file.
        to_set = {
            name: _coerce(ctx.options._options[name].typespec, value) for name, value in values.items()
            if ctx.options._options[name].current() == ctx.options._options[name].default
        }
        self.loaded_from = path
        logger.info("corral: configuration from %s", path)
        if to_set:
            ctx.options.update(**to_set)
