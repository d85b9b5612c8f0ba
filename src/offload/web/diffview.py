"""A unified diff as the pages show it: files, their hunks, and numbered lines.

`parse_diff` reads the text `git diff` writes (with or without the `a/` `b/` prefixes, or a
plain `diff -u`) and keeps what a page renders within bounds: at most `MAX_FILES` files and
`max_lines` lines, each line at most `MAX_LINE_CHARS` characters. What is cut is still
counted, so a page can say how much it does not show. Render it with the partial:
`{% with diff=VIEW %}{% include "_diff.html" %}{% endwith %}` (add `diff_url=...` in the
`with` to link the full diff as text when it is cut).

The diff arrives as text: a caller decodes bytes first (`errors="replace"`), since a page
shows characters, and a diff of non-UTF-8 files is still worth reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

LineKind: TypeAlias = Literal["context", "added", "deleted"]
Status: TypeAlias = Literal["added", "deleted", "modified", "renamed", "copied"]

# A page with more than this many files lists none of the rest; with more lines than
# `max_lines`, the rest of each file is counted but not rendered.
MAX_FILES = 300
# A minified file's one line can be megabytes long; past this it is cut, and says so.
MAX_LINE_CHARS = 2000

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$")
_DEV_NULL = "/dev/null"
# C-style escapes git writes in quoted paths (core.quotePath), besides \ooo octal bytes.
_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


@dataclass(frozen=True)
class DiffLine:
    """One line of a hunk: its kind, its numbers in the old and new file, its text."""

    kind: LineKind
    old: int | None
    new: int | None
    text: str
    # "\ No newline at end of file" followed this line.
    no_newline: bool = False
    # The text was longer than MAX_LINE_CHARS and is cut.
    cut: bool = False

    @property
    def mark(self) -> str:
        """The line's sign as the diff writes it: "+", "-" or a space."""
        return {"added": "+", "deleted": "-"}.get(self.kind, " ")


@dataclass(frozen=True)
class Hunk:
    """A hunk: its header line (with the function name git found, if any) and its lines."""

    header: str
    section: str
    old_start: int
    new_start: int
    lines: list[DiffLine] = field(default_factory=list)


@dataclass(frozen=True)
class FileDiff:
    """One file of a diff: its paths, what happened to it, its counts and its hunks."""

    old_path: str | None
    new_path: str | None
    status: Status
    binary: bool
    added: int
    deleted: int
    hunks: list[Hunk]
    # Some of the file's lines are not in `hunks`: the page's line limit was reached.
    truncated: bool = False
    old_mode: str | None = None
    new_mode: str | None = None
    similarity: int | None = None

    @property
    def path(self) -> str:
        """The file's path after the change, or before it for a deletion."""
        return self.new_path or self.old_path or "?"

    @property
    def rendered_lines(self) -> int:
        """How many of its lines the page shows."""
        return sum(len(h.lines) for h in self.hunks)


@dataclass(frozen=True)
class DiffView:
    """A diff ready for a page: its files (within the limits) and its whole counts."""

    files: list[FileDiff]
    truncated: bool
    added: int
    deleted: int
    # Files in the whole diff; more than len(files) when MAX_FILES cut the list.
    total_files: int = 0
    max_lines: int = 0

    @property
    def omitted_files(self) -> int:
        """Files of the diff the page does not list at all."""
        return self.total_files - len(self.files)


class _File:
    """A file being read: what the headers said so far, and its hunks."""

    def __init__(self, header: str | None) -> None:
        self.header = header
        self.prefixed = header is not None and _is_prefixed(header)
        self.old: str | None = None
        self.new: str | None = None
        self.old_known = self.new_known = False
        self.status: Status = "modified"
        self.binary = False
        self.added = self.deleted = 0
        self.hunks: list[Hunk] = []
        self.truncated = False
        self.old_mode: str | None = None
        self.new_mode: str | None = None
        self.similarity: int | None = None

    def finish(self) -> FileDiff:
        if not (self.old_known and self.new_known) and self.header is not None:
            # Binary, empty and mode-only files name themselves only in `diff --git X Y`.
            old, new = _header_names(self.header, self.prefixed)
            if not self.old_known:
                self.old = old
            if not self.new_known:
                self.new = new
        status = self.status
        if status == "modified" and self.old is None and self.new is not None:
            status = "added"
        elif status == "modified" and self.new is None and self.old is not None:
            status = "deleted"
        return FileDiff(
            old_path=self.old,
            new_path=self.new,
            status=status,
            binary=self.binary,
            added=self.added,
            deleted=self.deleted,
            hunks=self.hunks,
            truncated=self.truncated,
            old_mode=self.old_mode,
            new_mode=self.new_mode,
            similarity=self.similarity,
        )


def parse_diff(text: str, *, max_lines: int = 5000) -> DiffView:
    """The files, hunks and lines of a unified diff, at most `max_lines` lines rendered."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    files: list[FileDiff] = []
    current: _File | None = None
    budget = max_lines
    total_files = added = deleted = 0
    truncated = False
    hunk: Hunk | None = None
    old_left = new_left = 0
    old_no = new_no = 0
    # Whether the hunk's last line read is on the page (a "\ No newline" marks it).
    shown_last = False

    def close() -> None:
        nonlocal current, truncated
        if current is None:
            return
        if len(files) < MAX_FILES:
            files.append(current.finish())
        else:
            truncated = True
        current = None

    for line in lines:
        if current is not None and (old_left > 0 or new_left > 0):
            # Inside a hunk its counts decide what a line is: "--- x" is a deleted "-- x".
            sign = line[:1]
            if sign == "\\":
                if hunk is not None and shown_last:
                    hunk.lines[-1] = _with_no_newline(hunk.lines[-1])
                continue
            kind: LineKind
            if sign == "+":
                kind, new_left = "added", new_left - 1
                current.added += 1
                added += 1
            elif sign == "-":
                kind, old_left = "deleted", old_left - 1
                current.deleted += 1
                deleted += 1
            elif sign == " " or line == "":
                # A blank line is a context line whose space a mailer dropped.
                kind, old_left, new_left = "context", old_left - 1, new_left - 1
            else:
                # The counts lied (a hand-edited diff): end the hunk, read this as a header.
                old_left = new_left = 0
                hunk = None
                kind = "context"
                sign = ""
            if sign or line == "":
                old = old_no if kind != "added" else None
                new = new_no if kind != "deleted" else None
                if kind != "added":
                    old_no += 1
                if kind != "deleted":
                    new_no += 1
                if hunk is not None and budget > 0:
                    body = line[1:]
                    cut = len(body) > MAX_LINE_CHARS
                    hunk.lines.append(DiffLine(kind, old, new, body[:MAX_LINE_CHARS], cut=cut))
                    budget -= 1
                    shown_last = True
                else:
                    shown_last = False
                    current.truncated = truncated = True
                continue
        if line.startswith("\\") and hunk is not None and shown_last:
            # "\ No newline at end of file" after a hunk's last line.
            hunk.lines[-1] = _with_no_newline(hunk.lines[-1])
            continue
        if line.startswith("diff --git "):
            close()
            total_files += 1
            current = _File(line[len("diff --git ") :])
            hunk = None
            continue
        if line.startswith("--- ") and (
            current is None or current.hunks or (current.header is None and current.old_known)
        ):
            # A plain `diff -u` file starts at its --- line.
            close()
            total_files += 1
            current = _File(None)
            hunk = None
        if current is None:
            continue
        if line.startswith("@@ "):
            match = _HUNK.match(line)
            if match is None:
                continue
            old_no, new_no = int(match[1]), int(match[3])
            old_left = int(match[2]) if match[2] is not None else 1
            new_left = int(match[4]) if match[4] is not None else 1
            hunk = Hunk(line, match[5].strip(), old_no, new_no)
            shown_last = False
            if budget > 0:
                current.hunks.append(hunk)
            else:
                current.truncated = truncated = True
            continue
        _header(current, line)

    close()
    return DiffView(
        files=files,
        truncated=truncated,
        added=added,
        deleted=deleted,
        total_files=total_files,
        max_lines=max_lines,
    )


def _header(current: _File, line: str) -> None:
    """Apply one extended header line (---, +++, rename, mode, binary) to a file."""
    if line.startswith("--- "):
        current.old, current.old_known = _path(line[4:], "a/", current), True
    elif line.startswith("+++ "):
        current.new, current.new_known = _path(line[4:], "b/", current), True
        if current.header is None:
            _strip_plain_prefixes(current)
    elif line.startswith(("rename from ", "copy from ")):
        current.old, current.old_known = _unquoted(line.split(" ", 2)[2]), True
        current.status = "renamed" if line.startswith("rename") else "copied"
    elif line.startswith(("rename to ", "copy to ")):
        current.new, current.new_known = _unquoted(line.split(" ", 2)[2]), True
    elif line.startswith("new file mode "):
        current.old, current.old_known, current.status = None, True, "added"
        current.new_mode = line[len("new file mode ") :]
    elif line.startswith("deleted file mode "):
        current.new, current.new_known, current.status = None, True, "deleted"
        current.old_mode = line[len("deleted file mode ") :]
    elif line.startswith("old mode "):
        current.old_mode = line[len("old mode ") :]
    elif line.startswith("new mode "):
        current.new_mode = line[len("new mode ") :]
    elif line.startswith("similarity index ") and line.endswith("%"):
        digits = line[len("similarity index ") : -1]
        current.similarity = int(digits) if digits.isdigit() else None
    elif line.startswith("GIT binary patch") or (
        line.startswith("Binary files ") and line.endswith(" differ")
    ):
        current.binary = True


def _with_no_newline(line: DiffLine) -> DiffLine:
    return DiffLine(line.kind, line.old, line.new, line.text, no_newline=True, cut=line.cut)


def _path(text: str, prefix: str, current: _File) -> str | None:
    """A path after --- or +++: maybe quoted, maybe /dev/null, maybe with a/ or b/."""
    if text.startswith('"'):
        name, _ = _unquote(text)
    elif current.header is None and "\t" in text:
        # `diff -u` puts the file's time after a tab.
        name = text.split("\t", 1)[0]
    else:
        # git ends the line with a tab when the name has a space, for patch(1)'s sake.
        name = text[:-1] if text.endswith("\t") else text
    if name == _DEV_NULL:
        return None
    if current.prefixed and name.startswith(prefix):
        return name[len(prefix) :]
    return name


def _strip_plain_prefixes(current: _File) -> None:
    """Drop a plain diff's a/ and b/ when every named side has its own (/dev/null has none)."""
    names = [(current.old, "a/"), (current.new, "b/")]
    present = [(n, p) for n, p in names if n is not None]
    if present and all(n.startswith(p) for n, p in present):
        current.old = current.old[2:] if current.old is not None else None
        current.new = current.new[2:] if current.new is not None else None


def _is_prefixed(header: str) -> bool:
    """Whether `diff --git` names its files a/X b/Y (git's default) or bare (--no-prefix)."""
    return header.startswith(("a/", '"a/')) and (" b/" in header or ' "b/' in header)


def _header_names(header: str, prefixed: bool) -> tuple[str | None, str | None]:
    """The two names of `diff --git X Y`, quoted or not, without their prefixes."""
    old: str | None
    new: str | None
    if header.startswith('"'):
        old, rest = _unquote(header)
        rest = rest[1:]
        new = _unquote(rest)[0] if rest.startswith('"') else rest
    elif header.endswith('"') and ' "' in header:
        split = header.index(' "')
        old, new = header[:split], _unquote(header[split + 1 :])[0]
    else:
        # Unquoted names may hold spaces: two equal halves are the reliable split.
        half = len(header) // 2
        plain_half = header[2:half] if prefixed else header[:half]
        other_half = header[half + 3 :] if prefixed else header[half + 1 :]
        if len(header) % 2 == 1 and header[half] == " " and plain_half == other_half:
            old, new = header[:half], header[half + 1 :]
        else:
            split = header.find(" b/") if prefixed else header.find(" ")
            if split < 0:
                return header, header
            old, new = header[:split], header[split + 1 :]
    if prefixed:
        old = old[2:] if old.startswith("a/") else old
        new = new[2:] if new.startswith("b/") else new
    return old, new


def _unquoted(text: str) -> str:
    return _unquote(text)[0] if text.startswith('"') else text


def _unquote(text: str) -> tuple[str, str]:
    """A C-style quoted name at the start of text, unescaped, and the text after it."""
    out = bytearray()
    i = 1
    while i < len(text):
        char = text[i]
        if char == '"':
            return out.decode("utf-8", errors="replace"), text[i + 1 :]
        if char == "\\" and i + 1 < len(text):
            octal = text[i + 1 : i + 4]
            if len(octal) == 3 and all(c in "01234567" for c in octal):
                out.append(int(octal, 8) & 0xFF)
                i += 4
                continue
            out.append(_ESCAPES.get(text[i + 1], ord("?")))
            i += 2
            continue
        out.extend(char.encode("utf-8"))
        i += 1
    # Never closed: show it as it came rather than fail a page.
    return text, ""
