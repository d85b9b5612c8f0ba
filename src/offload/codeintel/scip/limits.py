"""Limits on the SCIP indexes offload reads: how much one upload may make the server hold.

Every index a real indexer writes for a mid-size repository fits well inside them; an index
over one is refused with a message naming the limit, its value and where it was passed. They
are checked while the stream is read, before the bytes they bound are held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024

# The index's protobuf bytes, after gzip decompression (the compressed upload is capped too).
MAX_INDEX_BYTES = 2048 * MiB
# One document's (or one external symbol's) encoded message: it is decoded whole.
MAX_DOCUMENT_BYTES = 64 * MiB
# The metadata message (tool name, version, arguments, project root).
MAX_METADATA_BYTES = 1 * MiB
MAX_DOCUMENTS = 1_000_000
MAX_OCCURRENCES = 1_000_000  # per document
# Symbol informations over the whole index: every document's plus the external ones.
MAX_SYMBOLS = 10_000_000
# Paths, languages, symbol names and metadata strings, in characters.
MAX_STRING_CHARS = 16 * 1024
# One documentation entry (a docstring or a signature in Markdown), in characters.
MAX_DOCUMENTATION_CHARS = 1 * MiB
# A gzip upload may expand at most this many times: real indexes compress 5 to 20 times, a
# decompression bomb a thousand. Checked once the output passes GZIP_RATIO_GRACE_BYTES, so
# that a small, very regular index is not refused.
MAX_GZIP_RATIO = 100
GZIP_RATIO_GRACE_BYTES = 4 * MiB
# Documents read before the metadata are kept this long in memory, then in a temporary file.
MAX_HELD_IN_MEMORY = 16 * MiB


@dataclass(frozen=True)
class Limits:
    """The limits one read applies; the defaults are the constants above."""

    index_bytes: int = MAX_INDEX_BYTES
    document_bytes: int = MAX_DOCUMENT_BYTES
    metadata_bytes: int = MAX_METADATA_BYTES
    documents: int = MAX_DOCUMENTS
    occurrences: int = MAX_OCCURRENCES
    symbols: int = MAX_SYMBOLS
    string_chars: int = MAX_STRING_CHARS
    documentation_chars: int = MAX_DOCUMENTATION_CHARS
    gzip_ratio: int = MAX_GZIP_RATIO
    gzip_ratio_grace_bytes: int = GZIP_RATIO_GRACE_BYTES
    held_in_memory: int = MAX_HELD_IN_MEMORY
