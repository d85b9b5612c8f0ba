"""Listings as a terminal of a given width and a pipe show them."""

from __future__ import annotations

import io

from rich.console import Console

from offload.terminal import TABLE_ROWS_MAX, Listing

NAME = "github.com/acme/" + "settlement-" * 6 + "service"
ERROR = "git fetch failed: the remote end hung up\nhint: is the repository still there?"


def shown(listing: Listing, width: int | None) -> str:
    """What `listing` prints on a terminal `width` wide, or into a pipe (None)."""
    file = io.StringIO()
    if width is None:
        console = Console(file=file, force_terminal=False, width=100_000, color_system=None)
    else:
        console = Console(file=file, force_terminal=True, width=width, color_system=None)
    listing.show(console)
    return file.getvalue()


def repos(count: int = 1) -> Listing:
    listing = Listing("name", "head", "last error", whole={"name", "head"})
    for i in range(count):
        listing.add(f"{NAME}-{i}", "0123456789ab", ERROR, style="red")
    return listing


def test_a_wide_terminal_gets_a_table_whose_names_are_whole() -> None:
    table = shown(repos(), 160)
    assert "┃ name" in table and f"│ {NAME}-0 │ 0123456789ab │" in table
    assert "…" not in table


def test_a_narrow_terminal_gets_whole_names_on_plain_lines() -> None:
    lines = shown(repos(), 60).splitlines()
    assert lines[0].split() == ["name", "head", "last", "error"]
    assert lines[1].startswith(f"{NAME}-0  0123456789ab  git fetch failed")
    assert len(lines) == 2 and "…" not in lines[1]


def test_a_pipe_gets_one_line_per_row_with_line_breaks_as_spaces() -> None:
    lines = shown(repos(2), None).splitlines()
    assert len(lines) == 3 and all(line == line.rstrip() for line in lines)
    assert lines[2] == f"{NAME}-1  0123456789ab  {ERROR.replace(chr(10), ' ')}"


def test_a_long_listing_is_plain_lines_on_a_terminal_too() -> None:
    lines = shown(repos(TABLE_ROWS_MAX + 1), 400).splitlines()
    assert len(lines) == TABLE_ROWS_MAX + 2 and "│" not in lines[1]


def test_cells_are_text_not_markup() -> None:
    listing = Listing("command", whole={"command"})
    listing.add("echo [bold]x[/bold] :x:")
    assert "echo [bold]x[/bold] :x:" in shown(listing, 80)
    assert shown(listing, None).splitlines()[1] == "echo [bold]x[/bold] :x:"
