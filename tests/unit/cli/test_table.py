"""addon/cli/table.py: the one column printer of the CLI's tables."""

from __future__ import annotations

from addon.cli.table import render_table


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
