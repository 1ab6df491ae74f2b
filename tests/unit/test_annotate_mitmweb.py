"""The Annotator inside mitmweb: the comment column is shown, marks are characters ordinary fonts have."""

from __future__ import annotations

import unicodedata

from mitmproxy.test import taddons
from mitmproxy.tools.web.webaddons import WebAddon
from mitmproxy.utils import emoji

from addon.annotate import MARK_CACHE_HIT, MARK_ERROR, Annotator, with_comment_column


def test_mitmweb_gets_the_comment_column_next_to_the_path() -> None:
    annotator = Annotator()
    with taddons.context(WebAddon(), annotator) as tctx:
        default = list(tctx.options.web_columns)
        assert "comment" not in default
        annotator.running()
        assert list(tctx.options.web_columns) == with_comment_column(default)
        assert tctx.options.web_columns.index("comment") == default.index("path") + 1


def test_a_users_own_columns_are_left_alone() -> None:
    annotator = Annotator()
    with taddons.context(WebAddon(), annotator) as tctx:
        tctx.configure(WebAddon(), web_columns=["path", "status"])
        annotator.running()
        assert list(tctx.options.web_columns) == ["path", "status"]


def test_without_mitmweb_nothing_is_touched() -> None:
    annotator = Annotator()
    with taddons.context(annotator) as tctx:
        annotator.running()
        assert "web_columns" not in tctx.options


def test_marks_are_known_shortcodes_with_a_text_presentation() -> None:
    for mark in (MARK_ERROR, MARK_CACHE_HIT):
        char = emoji.emoji[mark]  # mitmweb shows a red circle for an unknown shortcode
        assert len(char) == 1, "no variation selector forcing the emoji presentation"
        # Below the Supplementary Multilingual Plane: the Miscellaneous Symbols block that text fonts cover.
        assert 0x2600 <= ord(char) <= 0x26FF, unicodedata.name(char)


def test_with_comment_column() -> None:
    assert with_comment_column(["tls", "path", "status"]) == ["tls", "path", "comment", "status"]
    assert with_comment_column(["status"]) == ["status", "comment"]
    assert with_comment_column(["comment", "path"]) == ["comment", "path"]
