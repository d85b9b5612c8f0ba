"""Line maps between two versions of a file, read from `git diff -U0`.

Code navigation answers a commit from the index of an older one: a position is carried from
the newer file to the older through the diff's hunks, and each answer carried back. Only
lines outside every hunk are carried; a line inside a changed hunk has no safe counterpart,
and answering nothing beats answering a wrong place. Lines are 0-based here, as in SCIP.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from offload.codeintel.ranges import Range

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass(frozen=True)
class Hunk:
    """One change of a unified diff, as its header gives it (1-based starts, line counts).

    A count of 0 (lines only added, or only removed) makes its start the line *before* the
    change, as git writes it.
    """

    old_start: int
    old_count: int
    new_start: int
    new_count: int


def parse_hunks(diff: str) -> list[Hunk]:
    """The hunks of a unified diff of one file, in order; other lines are ignored."""
    hunks = []
    for line in diff.splitlines():
        found = _HUNK.match(line)
        if found:
            old, old_n, new, new_n = found.groups()
            hunks.append(
                Hunk(
                    int(old),
                    1 if old_n is None else int(old_n),
                    int(new),
                    1 if new_n is None else int(new_n),
                )
            )
    return hunks


class LineMap:
    """Carries 0-based lines between the old and the new file of one diff."""

    def __init__(self, hunks: Sequence[Hunk]) -> None:
        self.hunks = tuple(hunks)

    @property
    def identical(self) -> bool:
        """Whether the file is the same in both versions."""
        return not self.hunks

    def to_old(self, line: int) -> int | None:
        """The old file's line that the new file's `line` was, or None if it changed."""
        forward = [(h.new_start, h.new_count, h.old_start, h.old_count) for h in self.hunks]
        return _carry(forward, line)

    def to_new(self, line: int) -> int | None:
        """The new file's line that the old file's `line` became, or None if it changed."""
        forward = [(h.old_start, h.old_count, h.new_start, h.new_count) for h in self.hunks]
        return _carry(forward, line)

    def range_to_new(self, where: Range) -> Range | None:
        """An old range carried to the new file, or None if any of its lines changed."""
        start = self.to_new(where[0])
        end = start if where[2] == where[0] else self.to_new(where[2])
        # A range over several lines moves as a whole, or not at all.
        if start is None or end is None or end - start != where[2] - where[0]:
            return None
        return (start, where[1], end, where[3])


def _carry(hunks: list[tuple[int, int, int, int]], line: int) -> int | None:
    """`line` (0-based) of the "from" side carried to the "to" side through the hunks, given
    as (from_start, from_count, to_start, to_count) with 1-based starts."""
    at = line + 1
    shift = 0  # lines the "to" side has more than the "from" side, above `at`
    for from_start, from_count, _to_start, to_count in hunks:
        if from_count == 0:
            if at <= from_start:
                break
        elif at < from_start:
            break
        elif at < from_start + from_count:
            return None
        shift += to_count - from_count
    return line + shift
