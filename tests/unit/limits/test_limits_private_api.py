"""The private parts of the `limits` package that addon/limits/store.py relies on.

pyproject.toml bounds `limits` because of them; these tests say which part moved when a new release
is let in. LazyExpiryMemoryStorage overrides MemoryStorage's name-mangled ``__schedule_expiry`` (if
renamed, the override is dead code and limits' per-call clean-up is back); the Redis admission script
builds its keys with the Redis storage's window-key helpers and its bridge.
"""

from __future__ import annotations

import inspect

from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.storage.redis.bridge import RedisBridge
from limits.aio.storage.redis.redispy import RedispyBridge

from addon.limits.store import LazyExpiryMemoryStorage


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_memory_storage_has_the_expiry_hook_corral_overrides() -> None:
    hook = MemoryStorage.__dict__.get("_MemoryStorage__schedule_expiry")
    assert hook is not None, "limits.aio.storage.MemoryStorage lost __schedule_expiry"
    assert inspect.iscoroutinefunction(hook) and parameters(hook) == ["self"]
    # The override has the same name, so limits' own calls (self.__schedule_expiry()) reach it.
    override = LazyExpiryMemoryStorage.__dict__["_MemoryStorage__schedule_expiry"]
    assert inspect.iscoroutinefunction(override) and parameters(override) == parameters(hook)
    assert "__schedule_expiry()" in inspect.getsource(MemoryStorage.incr)


def test_redis_storage_has_the_window_key_helpers() -> None:
    for name in ("_current_window_key", "_previous_window_key"):
        helper = getattr(RedisStorage, name, None)
        assert helper is not None, f"limits' RedisStorage lost {name}"
        assert parameters(helper) == ["self", "key"]
    storage = RedisStorage.__new__(RedisStorage)  # the helpers are pure: no connection needed
    current = storage._current_window_key("k")
    assert storage._previous_window_key("k") != current and "k" in current


def test_redis_bridge_has_prefixed_key_and_get_connection() -> None:
    assert parameters(RedisBridge.prefixed_key) == ["self", "key"]
    assert parameters(RedispyBridge.get_connection)[:1] == ["self"]
