"""How the CLI writes: whole lines in pipes and scripts, tables that fit a terminal without
cutting what users copy, and one JSON document for `--json`."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Collection
from typing import Any, TextIO

from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text

# Rich lays out at a width; in a pipe no line of offload's output comes near this one, so
# nothing is wrapped, cut or ended with an ellipsis.
PIPE_WIDTH = 100_000
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")
# Rich lays a table out at about 1 ms a row (20,000 repositories: 17 s, plain lines 0.24 s);
# longer listings get plain lines on a terminal too.
TABLE_ROWS_MAX = 500


def _console(stream: TextIO | None, *, stderr: bool) -> Console:
    # soft_wrap: Rich never breaks a printed line, a terminal folds it only on screen, so a
    # command or path copied from it stays one line. emoji=False: `:x:` in a command is text.
    if stream is not None and stream.isatty():
        return Console(stderr=stderr, soft_wrap=True, emoji=False)
    return Console(
        stderr=stderr,
        soft_wrap=True,
        emoji=False,
        width=PIPE_WIDTH,
        force_terminal=False,
        color_system=None,
        highlight=False,
    )


def stdout() -> Console:
    """The console of a command's results: plain, whole lines when stdout is not a terminal."""
    return _console(sys.stdout, stderr=False)


def stderr() -> Console:
    """The console of progress, hints and errors: plain, whole lines when not a terminal."""
    return _console(sys.stderr, stderr=True)


def write_json(value: Any) -> None:
    """`value` as one JSON document on stdout (indented for a reader on a terminal)."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(value, indent=indent) + "\n")
    sys.stdout.flush()


class Listing:
    """The rows of a list command: a table fitted to a terminal, aligned plain columns in a
    pipe. Cells are text, never markup; `whole` columns (names, paths, commands, ids that
    users copy) are never wrapped or cut."""

    def __init__(self, *headers: str, whole: Collection[str] = ()) -> None:
        unknown = set(whole) - set(headers)
        if unknown:
            raise ValueError(f"whole columns {sorted(unknown)} are not among {headers}")
        self.headers = headers
        self.whole = [header in whole for header in headers]
        self.rows: list[tuple[tuple[str, ...], str | None]] = []

    def add(self, *cells: str, style: str | None = None) -> None:
        """One row, a cell per header; `style` (e.g. "red") colors it on a terminal."""
        if len(cells) != len(self.headers):
            raise ValueError(f"{len(cells)} cells for {len(self.headers)} columns")
        # One line per row, so that grep finds a row whole: a cell's line breaks (a git
        # error's hints, say) become spaces; --json keeps them.
        self.rows.append((tuple(_LINE_BREAKS.sub(" ", cell.strip()) for cell in cells), style))

    def show(self, console: Console) -> None:
        """Print the rows on `console`."""
        if not console.is_terminal:
            console.file.write("".join(line + "\n" for line in self._lines()))
            console.file.flush()
            return
        if len(self.rows) <= TABLE_ROWS_MAX:
            table = self._table()
            needed = Measurement.get(console, console.options.update_width(PIPE_WIDTH), table)
            if needed.minimum <= console.width:
                console.print(table)
                return
        # Rich would narrow the whole columns too: plain lines instead, which the terminal
        # folds on screen and which copy as they are.
        shown = Text()
        styles = ["bold", *(style or "" for _, style in self.rows)]
        for line, style in zip(self._lines(), styles, strict=True):
            shown.append(line + "\n", style=style)
        console.print(shown, end="", soft_wrap=True)

    def _lines(self) -> list[str]:
        rows = [self.headers, *(cells for cells, _ in self.rows)]
        widths = [max(cell_len(row[i]) for row in rows) for i in range(len(self.headers))]
        return [
            "  ".join(
                c + " " * (w - cell_len(c)) for c, w in zip(row, widths, strict=True)
            ).rstrip()
            for row in rows
        ]

    def _table(self) -> Table:
        columns = []
        for i, (header, whole) in enumerate(zip(self.headers, self.whole, strict=True)):
            # A whole column's least width is its widest cell, so measuring the table says
            # whether it fits without cutting one.
            widest = max((cell_len(cells[i]) for cells, _ in self.rows), default=0)
            least = max(widest, cell_len(header)) if whole else None
            columns.append(Column(header, no_wrap=whole, min_width=least))
        table = Table(*columns)
        for cells, style in self.rows:
            table.add_row(*(Text(cell) for cell in cells), style=style)
        return table
