"""Reading a SCIP index as a stream: one document at a time, never the whole index at once.

An index is one protobuf `Index` message, often hundreds of megabytes, whose fields are
metadata (1), documents (2) and external symbols (3), each length-delimited. Decoding it with
`Index.FromString` would hold every document at once; instead the top level is walked here
field by field (varint tag, varint length, payload) and each document is decoded alone with
`Document.FromString` as it arrives.

The input is an async iterator of byte chunks: an upload arrives as an HTTP request body
(Starlette's `request.stream()` is one) and offload is async end to end; a stored upload is
read through `file_chunks()`.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from pathlib import Path
from typing import IO

from google.protobuf.message import DecodeError

from offload.codeintel.scip import scip_pb2
from offload.codeintel.scip.limits import Limits
from offload.codeintel.scip.model import (
    Document,
    IndexPart,
    Metadata,
    Occurrence,
    ScipError,
    SymbolInfo,
)
from offload.codeintel.scip.stream import ByteStream, inflated

_METADATA, _DOCUMENTS, _EXTERNAL_SYMBOLS = 1, 2, 3
_FIELD_NAMES = {
    _METADATA: "metadata",
    _DOCUMENTS: "documents",
    _EXTERNAL_SYMBOLS: "external_symbols",
}
_LENGTH_DELIMITED = 2
# Payload sizes of the wire types offload skips in fields it does not know (newer SCIP).
_FIXED_SIZES = {1: 8, 5: 4}
_FILE_CHUNK = 1024 * 1024


async def read_index(
    chunks: AsyncIterable[bytes], *, limits: Limits | None = None
) -> AsyncIterator[IndexPart]:
    """The index's metadata (first, when it has one), then its documents and external symbols.

    Plain or gzip-compressed input. Raises ScipError for an index that is corrupt, truncated,
    over a limit of `limits` (default: the constants of scip/limits.py) or malformed.
    """
    async for part in _IndexReader(limits or Limits()).read(chunks):
        yield part


async def file_chunks(path: Path, size: int = _FILE_CHUNK) -> AsyncIterator[bytes]:
    """A file's bytes in chunks, read off the event loop: the input of read_index()."""
    file = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(file.read, size):
            yield chunk
    finally:
        file.close()


class _IndexReader:
    """One read of one index: its counts and the parts held until the metadata comes."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.documents = 0
        self.external_symbols = 0
        self.symbols = 0
        self.metadata: bytes | None = None
        # Parts that came before the metadata: (field, ordinal, offset, size) in `spool`.
        self.held: list[tuple[int, int, int, int]] = []
        self.spool: IO[bytes] | None = None

    async def read(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[IndexPart]:
        """Walk the top-level fields, yielding parts in the order read_index() promises."""
        stream = ByteStream(inflated(chunks, self.limits))
        try:
            while not await stream.at_end():
                start = stream.offset
                tag = await stream.varint("a field tag")
                field, wire_type = tag >> 3, tag & 7
                if field not in _FIELD_NAMES:
                    await self._skip(stream, start, tag)
                    continue
                payload = await self._payload(stream, start, field, wire_type)
                if field == _METADATA:
                    for part in self._on_metadata(payload, start):
                        yield part
                    continue
                ordinal = self._count(field, start)
                if self.metadata is None:
                    self._hold(field, ordinal, start, payload)
                else:
                    yield self._part(field, ordinal, start, payload)
            for part in self._release():
                yield part
        finally:
            if self.spool is not None:
                self.spool.close()

    async def _payload(self, stream: ByteStream, start: int, field: int, wire_type: int) -> bytes:
        name = _FIELD_NAMES[field]
        if wire_type != _LENGTH_DELIMITED:
            raise ScipError(
                f"the field at byte {start:,} is {name} (field {field}) with wire type "
                f"{wire_type}, where SCIP has 2 (length-delimited): the index is corrupt",
                offset=start,
            )
        what = self._what(field, start)
        size = await stream.varint(f"the length of {what}")
        limit, constant = (
            (self.limits.metadata_bytes, "MAX_METADATA_BYTES")
            if field == _METADATA
            else (self.limits.document_bytes, "MAX_DOCUMENT_BYTES")
        )
        if size > limit:
            raise ScipError(
                f"{what} is {size:,} bytes; the limit is {limit:,} ({constant})", offset=start
            )
        if stream.offset + size > self.limits.index_bytes:
            raise ScipError(
                f"{what} ends at byte {stream.offset + size:,}, past the limit of "
                f"{self.limits.index_bytes:,} bytes for an index (MAX_INDEX_BYTES)",
                offset=start,
            )
        return await stream.take(size, what)

    def _what(self, field: int, start: int) -> str:
        if field == _DOCUMENTS:
            return f"documents[{self.documents}] (at byte {start:,})"
        if field == _EXTERNAL_SYMBOLS:
            return f"external_symbols[{self.external_symbols}] (at byte {start:,})"
        return f"the metadata (at byte {start:,})"

    async def _skip(self, stream: ByteStream, start: int, tag: int) -> None:
        """Pass over a field SCIP may add later, as protobuf parsers do; refuse nonsense."""
        field, wire_type = tag >> 3, tag & 7
        what = f"field {field} (at byte {start:,})"
        if field == 0 or tag > 0xFFFFFFFF or wire_type not in (0, 1, 2, 5):
            raise ScipError(
                f"the bytes at {start:,} are not a protobuf field (tag {tag}: field {field}, "
                f"wire type {wire_type}): the index is corrupt or not a SCIP index",
                offset=start,
            )
        if wire_type == 0:
            await stream.varint(f"the value of {what}")
            return
        size = _FIXED_SIZES.get(wire_type)
        if size is None:
            size = await stream.varint(f"the length of {what}")
        if stream.offset + size > self.limits.index_bytes:
            raise ScipError(
                f"{what} ends at byte {stream.offset + size:,}, past the limit of "
                f"{self.limits.index_bytes:,} bytes for an index (MAX_INDEX_BYTES)",
                offset=start,
            )
        await stream.skip(size, what)

    def _count(self, field: int, start: int) -> int:
        """The part's ordinal among its kind; refuse one past MAX_DOCUMENTS."""
        if field == _EXTERNAL_SYMBOLS:
            self.external_symbols += 1
            return self.external_symbols - 1
        self.documents += 1
        if self.documents > self.limits.documents:
            raise ScipError(
                f"the index has more than {self.limits.documents:,} documents (at byte "
                f"{start:,}); the limit is {self.limits.documents:,} (MAX_DOCUMENTS)",
                offset=start,
            )
        return self.documents - 1

    def _on_metadata(self, payload: bytes, start: int) -> Iterator[IndexPart]:
        if self.metadata is not None:
            if payload == self.metadata:
                return
            raise ScipError(
                f"the index has a second, different metadata at byte {start:,}: it looks like "
                "two indexes put together; upload each on its own",
                offset=start,
            )
        self.metadata = payload
        yield _metadata(payload, start, self.limits)
        yield from self._release()

    def _hold(self, field: int, ordinal: int, start: int, payload: bytes) -> None:
        # Indexers write the metadata first, but protobuf allows it anywhere. What comes before
        # it waits in a temporary file (in memory while small), so memory stays bounded.
        if self.spool is None:
            self.spool = tempfile.SpooledTemporaryFile(max_size=self.limits.held_in_memory)
        self.spool.write(payload)
        self.held.append((field, ordinal, start, len(payload)))

    def _release(self) -> Iterator[IndexPart]:
        if self.spool is None or not self.held:
            return
        self.spool.seek(0)
        held, self.held = self.held, []
        for field, ordinal, start, size in held:
            yield self._part(field, ordinal, start, self.spool.read(size))
        self.spool.seek(0)
        self.spool.truncate()

    def _part(self, field: int, ordinal: int, start: int, payload: bytes) -> IndexPart:
        if field == _DOCUMENTS:
            return self._document(ordinal, start, payload)
        where = f"external_symbols[{ordinal}] (at byte {start:,})"
        try:
            message = scip_pb2.SymbolInformation.FromString(payload)
        except DecodeError as error:
            raise _corrupt(where, "symbol information", error, start) from error
        self._add_symbols(1, where, start)
        return _symbol_info(message, where, start, self.limits)

    def _document(self, ordinal: int, start: int, payload: bytes) -> Document:
        where = f"documents[{ordinal}] (at byte {start:,})"
        try:
            message = scip_pb2.Document.FromString(payload)
        except DecodeError as error:
            raise _corrupt(where, "document", error, start) from error
        limits = self.limits
        path = message.relative_path
        _check_string(path, "relative_path", where, start, limits)
        where = f"documents[{ordinal}] ({path!r}, at byte {start:,})"
        _check_path(path, where, start)
        _check_string(message.language, "language", where, start, limits)
        if len(message.occurrences) > limits.occurrences:
            raise ScipError(
                f"{where} has {len(message.occurrences):,} occurrences; the limit is "
                f"{limits.occurrences:,} per document (MAX_OCCURRENCES)",
                offset=start,
            )
        self._add_symbols(len(message.symbols), where, start)
        occurrences = []
        for number, occurrence in enumerate(message.occurrences):
            symbol = occurrence.symbol
            if not symbol:
                continue
            if len(symbol) > limits.string_chars:
                _check_string(symbol, f"occurrences[{number}].symbol", where, start, limits)
            occurrences.append(_occurrence(occurrence, symbol, number, where, start))
        symbols = tuple(
            _symbol_info(info, f"{where}: symbols[{n}]", start, limits)
            for n, info in enumerate(message.symbols)
        )
        return Document(path, message.language, tuple(occurrences), symbols)

    def _add_symbols(self, count: int, where: str, start: int) -> None:
        self.symbols += count
        if self.symbols > self.limits.symbols:
            raise ScipError(
                f"the index has more than {self.limits.symbols:,} symbols by {where}; the "
                f"limit is {self.limits.symbols:,} (MAX_SYMBOLS)",
                offset=start,
            )


def _occurrence(
    occurrence: scip_pb2.Occurrence, symbol: str, number: int, where: str, start: int
) -> Occurrence:
    """One occurrence with its range expanded to four numbers and checked."""
    numbers = tuple(occurrence.range)
    if len(numbers) == 3:
        start_line, start_char, end_char = numbers
        end_line = start_line
    elif len(numbers) == 4:
        start_line, start_char, end_line, end_char = numbers
    else:
        raise ScipError(
            f"{where}: occurrences[{number}] has the range {list(numbers)}; a range is "
            "[line, start character, end character] or [start line, start character, end "
            "line, end character]",
            offset=start,
        )
    if min(numbers) < 0 or (start_line, start_char) > (end_line, end_char):
        problem = "a negative position" if min(numbers) < 0 else "an end before its start"
        raise ScipError(
            f"{where}: occurrences[{number}] has the range {list(numbers)}, with {problem}",
            offset=start,
        )
    roles = occurrence.symbol_roles
    return Occurrence(start_line, start_char, end_line, end_char, symbol, roles)


def _symbol_info(
    message: scip_pb2.SymbolInformation, where: str, start: int, limits: Limits
) -> SymbolInfo:
    if not message.symbol:
        raise ScipError(f"{where} has an empty symbol name", offset=start)
    _check_string(message.symbol, "symbol", where, start, limits)
    documentation = tuple(message.documentation)
    for number, text in enumerate(documentation):
        if len(text) > limits.documentation_chars:
            raise ScipError(
                f"{where}: documentation[{number}] is {len(text):,} characters; the limit is "
                f"{limits.documentation_chars:,} (MAX_DOCUMENTATION_CHARS)",
                offset=start,
            )
    return SymbolInfo(message.symbol, documentation)


def _metadata(payload: bytes, start: int, limits: Limits) -> Metadata:
    where = f"the metadata (at byte {start:,})"
    try:
        message = scip_pb2.Metadata.FromString(payload)
    except DecodeError as error:
        raise _corrupt(where, "metadata", error, start) from error
    tool = message.tool_info
    for name, value in (
        ("tool_info.name", tool.name),
        ("tool_info.version", tool.version),
        ("project_root", message.project_root),
        *(("tool_info.arguments", argument) for argument in tool.arguments),
    ):
        _check_string(value, name, where, start, limits)
    encoding = message.text_document_encoding
    try:
        encoding_name = scip_pb2.TextEncoding.Name(encoding)
    except ValueError:  # an encoding newer than offload's scip.proto: keep its number
        encoding_name = str(encoding)
    arguments = tuple(tool.arguments)
    return Metadata(tool.name, tool.version, arguments, message.project_root, encoding_name)


def _check_string(value: str, name: str, where: str, start: int, limits: Limits) -> None:
    if len(value) > limits.string_chars:
        raise ScipError(
            f"{where}: {name} is {len(value):,} characters; the limit is "
            f"{limits.string_chars:,} (MAX_STRING_CHARS)",
            offset=start,
        )


def _check_path(path: str, where: str, start: int) -> None:
    """A document's path must name a file inside the project root, with '/' separators."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        problem = "is empty" if not path else "is not a relative path with '/' separators"
    elif any(part in ("", ".", "..") for part in parts):
        problem = "has an empty, '.' or '..' component"
    else:
        return
    raise ScipError(
        f"{where}: relative_path {problem}; SCIP paths are relative to the project root, like "
        "'src/main.py'",
        offset=start,
    )


def _corrupt(where: str, kind: str, error: DecodeError, start: int) -> ScipError:
    return ScipError(
        f"{where} is not a valid SCIP {kind} ({error}): the index is corrupt", offset=start
    )
