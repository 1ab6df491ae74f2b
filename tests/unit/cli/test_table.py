"""addon/cli/table.py: the one column printer of the CLI's tables."""

from __future__ import annotations

from addon.cli.table import render_table
from addon.cli.text import printable
from tests.support.reliability import reliability


def test_columns_are_as_wide_as_their_widest_cell_two_spaces_apart() -> None:
    out = render_table(["name", "n", "note"], [["openai", "12", "x"], ["a", "3", ""]])
    assert out.splitlines() == [
        "name    n   note",
        "openai  12  x",
        "a       3",  # no trailing blanks, also where the last cells are empty
    ]


def test_no_rows_prints_the_header_alone() -> None:
    assert render_table(["time", "mode"], []) == "time  mode"


def test_a_header_wider_than_every_cell_sets_the_width() -> None:
    assert render_table(["provider", "x"], [["a", "b"]]) == "provider  x\na         b"


@reliability("bad client input", "terminal escape sequences in a model name, path or error (corral flows/stats)",
             "-", "recorded as sent; the CLI tables print them escaped")
def test_control_characters_from_clients_are_escaped() -> None:
    hostile = "gpt\x1b]0;pwned\x07\x1b[2J\x9b31m\u202etxt.exe\u200b\r\n"
    out = render_table(["model", "n"], [[hostile, "1"]])
    assert not any(not ch.isprintable() and ch != "\n" for ch in out), repr(out)
    assert "gpt\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202etxt.exe\\u200b\\x0d\\x0a" in out
    lines = out.splitlines()
    assert len(lines) == 2 and lines[1].endswith("  1")  # the columns still line up


def test_printable_text_is_unchanged() -> None:
    assert printable("claude-3-5-sonnet 日本語 émoji 🦙") == "claude-3-5-sonnet 日本語 émoji 🦙"
