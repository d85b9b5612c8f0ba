"""Unified diffs as `git diff --cached --no-prefix --binary` writes them, split per file.

A diff is kept as bytes (file content need not be UTF-8) and each file's section keeps its exact
bytes, so that splitting a diff and joining the sections gives back the same diff, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypeAlias

Status: TypeAlias = Literal["added", "deleted", "modified", "renamed", "copied", "mode"]

_HEADER = b"diff --git "
_DEV_NULL = "/dev/null"
_OCTAL = b"01234567"
# C-style escapes git writes in quoted paths (quote_c_style), besides \ooo octal bytes.
_ESCAPES = {
    ord("a"): 7,
    ord("b"): 8,
    ord("t"): 9,
    ord("n"): 10,
    ord("v"): 11,
    ord("f"): 12,
    ord("r"): 13,
    ord('"'): ord('"'),
    ord("\\"): ord("\\"),
}


class DiffError(ValueError):
    """Bytes that are not a diff as git writes it."""


@dataclass(frozen=True)
class FileDiff:
    """One file's section of a diff: its paths, its exact bytes and what it changes."""

    old_path: str | None
    new_path: str | None
    raw: bytes
    added: int
    deleted: int
    is_binary: bool
    status: Status

    @property
    def path(self) -> str:
        """The file's path after the change, or before it for a deletion."""
        path = self.new_path if self.new_path is not None else self.old_path
        assert path is not None  # a section always names at least one side
        return path


@dataclass(frozen=True)
class DiffStat:
    """Lines added and deleted and files changed by a diff."""

    added: int = 0
    deleted: int = 0
    files: int = 0


@dataclass(frozen=True)
class ChangedFiles:
    """Paths a diff touches, by kind, as templates see them (`steps.modified_files`, ...)."""

    modified: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    renamed: tuple[str, ...] = ()


def parse_diff(data: bytes) -> list[FileDiff]:
    """Split a git diff into its files; raises DiffError if it does not start with a header."""
    if not data:
        return []
    if not data.startswith(_HEADER):
        raise DiffError(f"a git diff starts with {_HEADER.decode()!r}, not {data[:40]!r}")
    starts = [0]
    # No line inside a section can start with the header: hunk lines start with " +-\" and
    # the base85 lines of a binary patch contain no space.
    position = data.find(b"\n" + _HEADER)
    while position >= 0:
        starts.append(position + 1)
        position = data.find(b"\n" + _HEADER, position + 1)
    ends = [*starts[1:], len(data)]
    return [_section(data[start:end]) for start, end in zip(starts, ends, strict=True)]


def join_diff(files: Iterable[FileDiff]) -> bytes:
    """The diff made of these files' sections, in order."""
    return b"".join(f.raw for f in files)


def stat(files: Iterable[FileDiff]) -> DiffStat:
    """How many lines these files add and delete, and how many files there are."""
    added = deleted = count = 0
    for f in files:
        added += f.added
        deleted += f.deleted
        count += 1
    return DiffStat(added=added, deleted=deleted, files=count)


def changed_files(files: Iterable[FileDiff]) -> ChangedFiles:
    """The paths these files touch, by kind; renamed and copied files give their new path."""
    kinds: dict[str, list[str]] = {"modified": [], "added": [], "deleted": [], "renamed": []}
    for f in files:
        # As Sourcegraph's git.ChangesInDiff: a new name (a copy too) counts as renamed,
        # and a mode change as modified.
        kind = {"copied": "renamed", "mode": "modified"}.get(f.status, f.status)
        kinds[kind].append(f.path)
    return ChangedFiles(
        modified=tuple(kinds["modified"]),
        added=tuple(kinds["added"]),
        deleted=tuple(kinds["deleted"]),
        renamed=tuple(kinds["renamed"]),
    )


def _section(raw: bytes) -> FileDiff:
    lines = raw.split(b"\n")
    header = lines[0][len(_HEADER) :]
    old: str | None = None
    new: str | None = None
    old_known = new_known = False
    status: Status = "modified"
    mode_change = binary = in_hunks = False
    added = deleted = 0
    for line in lines[1:]:
        if in_hunks:
            # Inside hunks "--- x" is a deleted line "-- x", never a header.
            if line.startswith(b"+"):
                added += 1
            elif line.startswith(b"-"):
                deleted += 1
            continue
        if line.startswith(b"@@ "):
            in_hunks = True
        elif line.startswith(b"GIT binary patch") or (
            line.startswith(b"Binary files ") and line.endswith(b" differ")
        ):
            binary = True
            break
        elif line.startswith(b"--- "):
            old, old_known = _path(line[4:], header_line=True), True
        elif line.startswith(b"+++ "):
            new, new_known = _path(line[4:], header_line=True), True
        elif line.startswith((b"rename from ", b"copy from ")):
            old, old_known = _path(line.split(b" ", 2)[2]), True
            status = "renamed" if line.startswith(b"rename") else "copied"
        elif line.startswith((b"rename to ", b"copy to ")):
            new, new_known = _path(line.split(b" ", 2)[2]), True
        elif line.startswith(b"new file mode "):
            old, old_known, status = None, True, "added"
        elif line.startswith(b"deleted file mode "):
            new, new_known, status = None, True, "deleted"
        elif line.startswith((b"old mode ", b"new mode ")):
            mode_change = True
    if not (old_known and new_known):
        # Sections with no ---/+++ lines (empty, binary or mode-only files) name the file
        # only in the header, where both names are the same unless it is a rename or copy.
        name = _header_name(header)
        if not old_known:
            old = name
        if not new_known:
            new = name
    if old is None and new is None:
        raise DiffError(f"cannot tell which file this diff section is about: {lines[0]!r}")
    if status == "modified" and mode_change and not in_hunks and not binary:
        status = "mode"
    if binary:
        added = deleted = 0
    return FileDiff(old, new, raw, added, deleted, binary, status)


def _path(text: bytes, *, header_line: bool = False) -> str | None:
    """A path as git writes it after ---, +++, rename from/to: maybe quoted, maybe /dev/null."""
    if header_line and text.endswith(b"\t"):
        # git ends ---/+++ lines with a tab when the name has a space, for patch(1)'s sake.
        text = text[:-1]
    if text.startswith(b'"'):
        name, rest = _unquote(text)
        if rest:
            raise DiffError(f"unexpected text after a quoted path: {text!r}")
    else:
        name = text
    path = _decode(name)
    return None if path == _DEV_NULL else path


def _header_name(header: bytes) -> str | None:
    """The file named twice in `diff --git X X`, quoted or not; None if the names differ."""
    if header.startswith(b'"'):
        first, rest = _unquote(header)
        if not rest.startswith(b" "):
            return None
        rest = rest[1:]
        second = _unquote(rest)[0] if rest.startswith(b'"') else rest
        return _decode(first) if first == second else None
    if header.endswith(b'"'):
        split = header.find(b' "')
        if split < 0:
            return None
        first = header[:split]
        second, rest = _unquote(header[split + 1 :])
        return _decode(first) if first == second and not rest else None
    # Unquoted names may hold spaces: the only reliable split is two equal halves.
    half = len(header) // 2
    if (
        len(header) % 2 == 1
        and header[half : half + 1] == b" "
        and header[:half] == header[half + 1 :]
    ):
        return _decode(header[:half])
    return None


def _unquote(text: bytes) -> tuple[bytes, bytes]:
    """A C-style quoted string at the start of text, unescaped, and the text after it."""
    out = bytearray()
    i = 1
    while i < len(text):
        char = text[i]
        if char == ord('"'):
            return bytes(out), text[i + 1 :]
        if char == ord("\\") and i + 1 < len(text):
            escaped = text[i + 1]
            octal = text[i + 1 : i + 4]
            if len(octal) == 3 and all(c in _OCTAL for c in octal) and octal[0] <= ord("3"):
                out.append(int(octal, 8))
                i += 4
                continue
            if escaped in _ESCAPES:
                out.append(_ESCAPES[escaped])
                i += 2
                continue
            raise DiffError(f"unknown escape \\{chr(escaped)} in quoted path {text!r}")
        out.append(char)
        i += 1
    raise DiffError(f"quoted path is never closed: {text!r}")


def _decode(name: bytes) -> str:
    # Paths are for display and grouping; the section's bytes stay the authority.
    return name.decode("utf-8", errors="replace")
