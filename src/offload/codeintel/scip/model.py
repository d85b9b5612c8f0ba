"""What a SCIP index holds for offload: documents, their occurrences and symbols, metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

# SymbolRole bits (scip.proto). Only these decide what code navigation answers.
DEFINITION = 0x1
IMPORT = 0x2
FORWARD_DEFINITION = 0x40


class ScipError(ValueError):
    """An index offload cannot read: corrupt, truncated, over a limit, or malformed.

    `offset` is the byte offset in the (decompressed) index where it was found, when known.
    """

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        self.offset = offset
        super().__init__(message)


@dataclass(frozen=True)
class Metadata:
    """Which tool wrote the index, with which arguments, for which project root."""

    tool_name: str
    tool_version: str
    tool_arguments: tuple[str, ...]
    project_root: str
    text_encoding: str  # "UTF8", "UTF16" or "UnspecifiedTextEncoding"


class Occurrence(NamedTuple):
    """One mention of a symbol: a 0-based range (end exclusive), the symbol and its roles.

    A tuple rather than a dataclass: an index holds millions, and tuples are built the fastest.
    """

    start_line: int
    start_char: int
    end_line: int
    end_char: int
    symbol: str
    roles: int


@dataclass(frozen=True)
class SymbolInfo:
    """A symbol a document defines (or an external one the index refers to), with its docs."""

    symbol: str
    documentation: tuple[str, ...] = ()


@dataclass(frozen=True)
class Document:
    """One source file of the index: its path relative to the project root, and what it holds.

    Occurrences without a symbol (syntax highlighting only) are left out.
    """

    path: str
    language: str
    occurrences: tuple[Occurrence, ...]
    symbols: tuple[SymbolInfo, ...]


# What reading an index yields: the metadata first (when the index has one), then documents
# and external symbols (SymbolInfo at the top level) in the order of the index.
IndexPart: TypeAlias = Metadata | Document | SymbolInfo


def is_definition(roles: int) -> bool:
    """Whether an occurrence with these roles defines its symbol (rather than refers to it)."""
    return bool(roles & DEFINITION)
