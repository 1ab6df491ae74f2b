"""The chain container (addon/chain.py): one mitmproxy addon that runs each hook through Corral's
addons in order, isolating their failures the way mitmproxy isolates top-level addons."""

from __future__ import annotations

import asyncio
import logging

import pytest
from mitmproxy import exceptions

from addon.chain import Chain, build


class Seen:
    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def response(self, flow) -> None:
        self.log.append(f"{self.name}.response")
        if self.fail:
            raise RuntimeError("boom")

    def configure(self, updated) -> None:
        if self.fail:
            raise exceptions.OptionsError("bad value")
        self.log.append(f"{self.name}.configure")


class AsyncSeen:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def response(self, flow) -> None:
        await asyncio.sleep(0)
        self.log.append("async.response")


def test_hooks_run_in_order_and_a_failing_addon_does_not_stop_the_next(caplog) -> None:
    log: list[str] = []
    chain = Chain([Seen("a", log), Seen("b", log, fail=True), AsyncSeen(log), Seen("c", log)])
    with caplog.at_level(logging.ERROR):
        asyncio.run(chain.response(object()))
    assert log == ["a.response", "b.response", "async.response", "c.response"]
    assert "Addon error: boom" in caplog.text


def test_sync_hooks_stay_sync_and_options_errors_propagate() -> None:
    log: list[str] = []
    chain = Chain([Seen("a", log), Seen("b", log)])
    assert chain.configure({"x"}) is None  # mitmproxy calls configure synchronously
    assert log == ["a.configure", "b.configure"]
    with pytest.raises(exceptions.OptionsError):
        Chain([Seen("a", log, fail=True)]).configure({"x"})


def test_only_hooks_some_addon_has_are_exposed() -> None:
    chain = Chain(build())
    assert callable(chain.requestheaders) and callable(chain.response) and callable(chain.load)
    assert not hasattr(chain, "update")  # mitmproxy fires it after every hook: nobody pays for it
    assert not hasattr(chain, "addons")  # mitmproxy must not also dispatch to the children itself
