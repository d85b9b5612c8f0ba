"""A batch spec's YAML tree with its text: field paths turned into lines and columns."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeAlias

from offload.batches.spec.model import SpecError

FieldPath: TypeAlias = Sequence[str | int]

_IDENTIFIER = re.compile(r"^[A-Za-z_][\w-]*$")


class SpecSource:
    """The ruamel.yaml tree of a spec and its text, to place errors about its fields."""

    def __init__(self, root: Any, text: str, source: str) -> None:
        self.root = root
        self.lines = text.splitlines()
        self.source = source

    def error(
        self, path: FieldPath, message: str, position: tuple[int, int] | None = None
    ) -> SpecError:
        """An error about the field at path, at the given position or else at its value."""
        line, column = position or self.value_position(path)
        return SpecError(
            message, path=format_path(path), line=line, column=column, source=self.source
        )

    def value_position(self, path: FieldPath) -> tuple[int, int]:
        """The 1-based line and column where the value at path starts (its key's, when empty)."""
        node, (line, column), found = self._walk(path)
        if found and node is None and path and isinstance(path[-1], str):
            # An empty value has no position of its own: ruamel reports the next token's.
            return self.key_position(path)
        return line + 1, column + 1

    def key_position(self, path: FieldPath) -> tuple[int, int]:
        """The 1-based line and column of the last key of path (its value's, when not a key)."""
        parent, position, _ = self._walk(path[:-1])
        key = original_key(parent, path[-1]) if path else None
        if key is None:
            line, column = self._walk(path)[1]
        else:
            line, column = _lc(parent, "key", key, position)
        return line + 1, column + 1

    def text_position(self, path: FieldPath, offset: int) -> tuple[int, int]:
        """The file position of a character offset in the string value at path."""
        node, (line, column), _ = self._walk(path)
        for start, length, seg_line, seg_column in _runs(self.lines, line, column, str(node)):
            if start <= offset <= start + length:
                return seg_line + 1, seg_column + 1 + offset - start
        return line + 1, column + 1

    def _walk(self, path: FieldPath) -> tuple[Any, tuple[int, int], bool]:
        """The node at path (or its deepest existing ancestor), its 0-based position, found."""
        node = self.root
        position = _lc(node, "start", None, (0, 0))
        for part in path:
            if isinstance(part, str) and (key := original_key(node, part)) is not None:
                position = _lc(node, "value", key, position)
                node = node[key]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                position = _lc(node, "item", part, position)
                node = node[part]
            else:
                return node, position, False
        return node, position, True


def key_text(key: Any) -> str:
    """A YAML mapping key as the string it becomes in JSON."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return json.dumps(key)
    return str(key)


def original_key(node: Any, key: str | int) -> Any:
    """The key of a ruamel.yaml mapping whose JSON text is key, or None."""
    if not isinstance(node, Mapping):
        return None
    return next((k for k in node if key_text(k) == key), None)


def format_path(path: FieldPath) -> str:
    """A field path as users write it: steps[0].env.NAME, published[0]["github.com/*"]."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _lc(node: Any, kind: str, key: Any, default: tuple[int, int]) -> tuple[int, int]:
    try:
        lc = node.lc
        line, column = (lc.line, lc.col) if kind == "start" else getattr(lc, kind)(key)
    except (AttributeError, KeyError, IndexError, TypeError):
        # Merged (<<) keys carry no position of their own; the enclosing one is the best left.
        return default
    return int(line), int(column)


def _runs(
    lines: list[str], line: int, column: int, text: str
) -> Iterator[tuple[int, int, int, int]]:
    """Align a scalar's parsed text with its source: runs of (offset, length, line, column).

    The runs stop where the source stops matching the text (at an escape sequence, say):
    offsets past the last run have no exact position.
    """
    header = lines[line][column:] if line < len(lines) else ""
    style = header[:1]
    fragments: Iterator[tuple[int, int, str]]
    if style in ("|", ">"):
        indent = _block_indent(lines, line + 1, header)
        inside = itertools.takewhile(
            lambda n: not lines[n].strip() or _indentation(lines[n]) >= indent,
            range(line + 1, len(lines)),
        )
        fragments = ((n, indent, lines[n][indent:]) for n in inside)
    else:
        skip = 1 if style in ('"', "'") else 0
        first = [(line, column + skip, header[skip:])]
        rest = ((n, _indentation(lines[n]), lines[n].lstrip()) for n in range(line + 1, len(lines)))
        fragments = itertools.chain(first, rest)
    offset = 0
    for n, col, fragment in fragments:
        matched = _common_prefix_length(fragment, text[offset:])
        yield offset, matched, n, col
        offset += matched
        if offset >= len(text) or matched < len(fragment):
            return
        # Folding joins source lines with a space or a newline; neither is in the source.
        if text[offset] in " \n":
            offset += 1


def _block_indent(lines: list[str], first: int, header: str) -> int:
    explicit = re.match(r"^[|>][+-]?([1-9])|^[|>]([1-9])", header)
    if explicit:
        parent = _indentation(lines[first - 1]) if first > 0 else 0
        return parent + int(explicit[1] or explicit[2])
    return _indentation(next((ln for ln in lines[first:] if ln.strip()), ""))


def _indentation(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _common_prefix_length(a: str, b: str) -> int:
    end = min(len(a), len(b))
    return next((i for i in range(end) if a[i] != b[i]), end)
