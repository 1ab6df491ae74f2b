"""The addon chain, in order. Each addon reads only metadata written by the ones before it
(addon/metadata.py documents every key)."""

from __future__ import annotations

from addon.config import ConfigFile
from addon.meter import Meter
from addon.recorder import Recorder
from addon.router import Router


def build() -> list[object]:
    router = Router()
    return [
        ConfigFile(),  # corral.toml -> options; first, so every later addon sees the file's values
        router,  # provider, mode, upstream rewrite; answers unknown routes itself
        Meter(),  # model, stream tee, usage, errors
        Recorder(router),  # one row per flow, written off the loop in batches
    ]
