"""A processed document: its occurrences and its symbols' hover text, stored as one payload.

The payload names each symbol once; occurrences refer to symbols by index, and their ranges,
sorted by position, are encoded by codeintel/ranges.py. The whole is zlib-compressed. Two
uploads holding the same file's index make the same payload (its sha256 is the row's key), so
they share one stored document.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from offload.codeintel.ranges import decode_ranges, encode_ranges
from offload.codeintel.scip.model import Occurrence, SymbolInfo

_FORMAT = 1
# zlib level 6 (the default) compresses payloads about as well as 9, at half the time.
_LEVEL = 6


class DocumentError(ValueError):
    """A stored payload offload cannot read (damaged, or written by a newer format)."""


@dataclass(frozen=True)
class StoredDocument:
    """What code navigation reads of one file: occurrences by position, and hover text."""

    language: str
    occurrences: tuple[Occurrence, ...]
    hover: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class EncodedDocument:
    """A document's payload ready to store, with what its row keeps beside it."""

    payload: bytes
    sha256: str
    num_occurrences: int


def make_document(
    language: str, occurrences: Iterable[Occurrence], symbols: Iterable[SymbolInfo]
) -> StoredDocument:
    """The canonical document: occurrences sorted and deduplicated, hover text of symbols
    that have some (the first non-empty one wins when a symbol is described twice)."""
    hover: dict[str, tuple[str, ...]] = {}
    for info in symbols:
        if info.documentation and info.symbol not in hover:
            hover[info.symbol] = info.documentation
    return StoredDocument(language, tuple(sorted(set(occurrences))), hover)


def encode_document(document: StoredDocument) -> EncodedDocument:
    """The payload of `document` (whose occurrences are sorted, as make_document() leaves
    them) and its sha256."""
    index: dict[str, int] = {}
    symbol_of = []
    roles = []
    for occurrence in document.occurrences:
        symbol_of.append(index.setdefault(occurrence.symbol, len(index)))
        roles.append(occurrence.roles)
    for symbol in sorted(document.hover):
        index.setdefault(symbol, len(index))
    header = {
        "format": _FORMAT,
        "language": document.language,
        "symbols": list(index),
        "occurrences": symbol_of,
        "roles": roles,
        "hover": {str(index[s]): list(docs) for s, docs in sorted(document.hover.items())},
    }
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    ranges = encode_ranges(o[:4] for o in document.occurrences)
    raw = len(head).to_bytes(4, "big") + head + ranges
    return EncodedDocument(
        payload=zlib.compress(raw, _LEVEL),
        sha256=hashlib.sha256(raw).hexdigest(),
        num_occurrences=len(document.occurrences),
    )


def decode_document(payload: bytes) -> StoredDocument:
    """The document a payload of encode_document() holds."""
    try:
        raw = zlib.decompress(payload)
        size = int.from_bytes(raw[:4], "big")
        header = json.loads(raw[4 : 4 + size])
        ranges = decode_ranges(raw[4 + size :])
    except (zlib.error, ValueError) as error:
        raise DocumentError(f"a stored document cannot be read: {error}") from error
    if header.get("format") != _FORMAT:
        raise DocumentError(
            f"a stored document has format {header.get('format')!r}; this offload reads "
            f"format {_FORMAT}: upgrade offload, or upload the index again"
        )
    symbols: list[str] = header["symbols"]
    occurrences = tuple(
        Occurrence(*where, symbols[symbol], roles)
        for where, symbol, roles in zip(ranges, header["occurrences"], header["roles"], strict=True)
    )
    hover = {symbols[int(i)]: tuple(docs) for i, docs in header["hover"].items()}
    return StoredDocument(header["language"], occurrences, hover)


def occurrence_at(document: StoredDocument, line: int, character: int) -> Occurrence | None:
    """The innermost occurrence whose range holds the 0-based position, or None."""
    occurrences = document.occurrences
    # Sorted by start: only those starting at or before the position can hold it.
    last = bisect.bisect_right(occurrences, (line, character, _MAX, _MAX))
    best: Occurrence | None = None
    for occurrence in occurrences[:last]:
        if (line, character) < (occurrence.end_line, occurrence.end_char) and (
            best is None or _inside(occurrence, best)
        ):
            best = occurrence
    return best


_MAX = float("inf")


def _inside(inner: Occurrence, outer: Occurrence) -> bool:
    return inner[:2] >= outer[:2] and inner[2:4] <= outer[2:4]
