"""corral.toml read by the ConfigFile addon (mitmdump -s / mitmweb -s): a wrong type or a misspelt key
is one OptionsError naming the file, the key, what was expected and what was given; never a TypeError."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from addon.cache.backend import ResponseCache
from addon.cache.lookup import CacheLookup
from addon.config import ConfigFile, expected, given
from addon.services import SharedState


@pytest.mark.parametrize(("text", "message"), [
    ('[cache]\nttl = "one day"\n', '[cache] ttl: expected an integer, got "one day" (a string)'),
    ("[cache]\nenabled = 1\n", "[cache] enabled: expected true or false, got 1 (an integer)"),
    ('[cache]\nproviders = "openai"\n', '[cache] providers: expected a list of strings, got "openai" (a string)'),
    ("[cache]\ntll = 5\n", "unknown setting [cache] tll (did you mean [cache] ttl?)"),
])
def test_file_errors_name_file_key_expected_and_given(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "corral.toml"
    path.write_text(text)
    lookup = CacheLookup(ResponseCache(), SharedState())
    with taddons.context(ConfigFile(), lookup) as tctx:
        with pytest.raises(exceptions.OptionsError) as info:
            tctx.options.corral_config = str(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_words() -> None:
    assert expected(float) == "a number" and expected(str) == "a string"
    assert given(2.5) == "2.5 (a number)" and given({"a": 1}) == "{'a': 1} (a table)"
