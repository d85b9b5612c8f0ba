"""SCIP symbol names: `scheme manager package version descriptors...`, or `local N`.

The grammar is scip.proto's (see the comment above its `Symbol` message): the four package
fields are separated by one space, a space inside one is written as two, and `.` stands for
an empty manager, name or version; descriptors follow with a suffix saying what each names
(`pkg/` a namespace, `Type#`, `term.`, `method().`, `[T]`, `(param)`, `meta:`, `macro!`);
names outside `[A-Za-z0-9_+$-]` are quoted in backticks, a backtick inside written as two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from offload.codeintel.scip.model import ScipError

Suffix: TypeAlias = Literal[
    "namespace", "type", "term", "method", "type_parameter", "parameter", "meta", "macro"
]

_SUFFIXES: dict[str, Suffix] = {
    "/": "namespace",
    "#": "type",
    ".": "term",
    ":": "meta",
    "!": "macro",
}
_LOCAL = "local "


class SymbolError(ScipError):
    """A symbol name that does not follow SCIP's grammar."""


@dataclass(frozen=True)
class Descriptor:
    """One step of a symbol's qualified name, and what kind of thing it names."""

    name: str
    suffix: Suffix
    disambiguator: str = ""  # methods only: tells overloads apart


@dataclass(frozen=True)
class Symbol:
    """A parsed symbol name; a local one has only `local_id`, a global one the rest."""

    scheme: str = ""
    manager: str = ""
    package: str = ""
    version: str = ""
    descriptors: tuple[Descriptor, ...] = ()
    local_id: str = ""

    @property
    def is_local(self) -> bool:
        """Whether the symbol is local to its document (and so never crosses files)."""
        return bool(self.local_id)


def parse_symbol(text: str) -> Symbol:
    """Parse a symbol name; raise SymbolError saying what is wrong and at which column."""
    if text.startswith(_LOCAL):
        local_id = text[len(_LOCAL) :]
        if not local_id or not all(_simple(c) for c in local_id):
            raise _error(text, len(_LOCAL), "a local symbol's id must be letters and digits")
        return Symbol(local_id=local_id)
    parser = _Parser(text)
    scheme = parser.field("scheme")
    if not scheme:
        raise _error(text, 0, "the scheme is empty")
    manager, package, version = (parser.field(name, dot_empty=True) for name in _PACKAGE)
    descriptors = parser.descriptors()
    return Symbol(scheme, manager, package, version, descriptors)


_PACKAGE = ("package manager", "package name", "package version")


def _simple(character: str) -> bool:
    # The grammar says ASCII letters and digits; some indexers write other letters unquoted
    # (identifiers in Go, Kotlin, Scala may be any Unicode letter), so they are accepted too.
    return character.isalnum() or character in "_+-$"


def _error(text: str, column: int, what: str) -> SymbolError:
    return SymbolError(f"symbol {text!r} is malformed at column {column + 1}: {what}")


class _Parser:
    """A cursor over one symbol name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def field(self, name: str, *, dot_empty: bool = False) -> str:
        """One space-terminated package field, with doubled spaces unescaped."""
        text, parts = self.text, []
        while True:
            end = text.find(" ", self.at)
            if end < 0:
                raise _error(text, len(text), f"it ends before the {name} and its space")
            parts.append(text[self.at : end])
            if text.startswith("  ", end):
                parts.append(" ")
                self.at = end + 2
                continue
            self.at = end + 1
            value = "".join(parts)
            return "" if dot_empty and value == "." else value

    def descriptors(self) -> tuple[Descriptor, ...]:
        """The descriptors to the end of the name: at least one."""
        found: list[Descriptor] = []
        if self.at == len(self.text):
            raise _error(self.text, self.at, "there are no descriptors after the package")
        while self.at < len(self.text):
            found.append(self.descriptor())
        return tuple(found)

    def descriptor(self) -> Descriptor:
        """One descriptor, its suffix included."""
        text = self.text
        opening = text[self.at]
        if opening in "[(":
            self.at += 1
            name = self.name()
            closing = "]" if opening == "[" else ")"
            self.expect(closing)
            return Descriptor(name, "type_parameter" if opening == "[" else "parameter")
        name = self.name()
        if self.at == len(text):
            raise _error(text, self.at, f"the descriptor {name!r} has no suffix (/ # . : ! ()")
        mark = text[self.at]
        self.at += 1
        if mark in _SUFFIXES:
            return Descriptor(name, _SUFFIXES[mark])
        if mark != "(":
            raise _error(text, self.at - 1, f"{mark!r} is not a descriptor suffix (/ # . : ! ()")
        start = self.at
        while self.at < len(text) and _simple(text[self.at]):
            self.at += 1
        disambiguator = text[start : self.at]
        self.expect(")")
        self.expect(".")
        return Descriptor(name, "method", disambiguator)

    def name(self) -> str:
        """A simple name, or a backtick-quoted one with doubled backticks unescaped."""
        text, start = self.text, self.at
        if text.startswith("`", start):
            parts, self.at = [], start + 1
            while True:
                end = text.find("`", self.at)
                if end < 0:
                    raise _error(text, start, "the quoted name has no closing backtick")
                parts.append(text[self.at : end])
                if text.startswith("``", end):
                    parts.append("`")
                    self.at = end + 2
                    continue
                self.at = end + 1
                name = "".join(parts)
                if not name:
                    raise _error(text, start, "the quoted name is empty")
                return name
        while self.at < len(text) and _simple(text[self.at]):
            self.at += 1
        if self.at == start:
            found = repr(text[start]) if start < len(text) else "the end"
            raise _error(text, start, f"expected a name, found {found}")
        return text[start : self.at]

    def expect(self, character: str) -> None:
        """Step over `character`, which must come next."""
        if not self.text.startswith(character, self.at):
            found = repr(self.text[self.at]) if self.at < len(self.text) else "the end"
            raise _error(self.text, self.at, f"expected {character!r}, found {found}")
        self.at += 1
