"""Lines carried between two versions of a file through a real `git diff -U0`: unchanged lines
move with the edits around them, lines inside a change have no counterpart."""

from __future__ import annotations

import subprocess
from pathlib import Path

from offload.codeintel.positions import Hunk, LineMap, parse_hunks


def git_diff(tmp: Path, old: str, new: str) -> str:
    """`git diff -U0` of one file from `old` to `new`, in a throwaway repository."""
    subprocess.run(["git", "init", "-q", str(tmp)], check=True)
    (tmp / "f").write_text(old)
    subprocess.run(["git", "add", "f"], cwd=tmp, check=True)
    (tmp / "f").write_text(new)
    return subprocess.run(
        ["git", "diff", "-U0", "--no-color", "--", "f"],
        cwd=tmp,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_hunk_headers_with_and_without_counts() -> None:
    diff = "diff --git a/f b/f\n@@ -0,0 +1 @@\n+x\n@@ -3 +4 @@ b\n@@ -5 +5,0 @@ d\n"
    assert parse_hunks(diff) == [Hunk(0, 0, 1, 1), Hunk(3, 1, 4, 1), Hunk(5, 1, 5, 0)]


def test_lines_around_an_insertion_a_change_and_a_deletion(tmp_path: Path) -> None:
    lines = LineMap(parse_hunks(git_diff(tmp_path, "a\nb\nc\nd\ne\n", "new\na\nb\nC\nd\n")))
    # new file: new a b C d  /  old file: a b c d e
    assert [lines.to_old(n) for n in range(5)] == [None, 0, 1, None, 3]
    assert [lines.to_new(n) for n in range(5)] == [1, 2, None, 4, None]
    assert lines.to_old(40) == 40  # one line added, one removed above it: no shift


def test_one_line_inserted_above_moves_everything_below_by_one(tmp_path: Path) -> None:
    old = "".join(f"line {n}\n" for n in range(10))
    new = old.replace("line 4\n", "added\nline 4\n")
    lines = LineMap(parse_hunks(git_diff(tmp_path, old, new)))
    assert [lines.to_new(n) for n in range(10)] == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10]
    assert lines.to_old(4) is None
    assert lines.range_to_new((6, 2, 6, 9)) == (7, 2, 7, 9)
    # A range spanning the inserted line would change its shape: dropped, not stretched.
    assert lines.range_to_new((3, 0, 4, 3)) is None
    assert lines.range_to_new((1, 0, 2, 3)) == (1, 0, 2, 3)


def test_an_unchanged_file_maps_every_line_to_itself(tmp_path: Path) -> None:
    lines = LineMap(parse_hunks(git_diff(tmp_path, "a\nb\n", "a\nb\n")))
    assert lines.identical
    assert (lines.to_old(1), lines.to_new(1)) == (1, 1)
