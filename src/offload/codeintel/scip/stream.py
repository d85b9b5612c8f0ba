"""The byte stream an index is read from: gzip inflated on the fly, varints, exact reads.

Offsets in errors are in the decompressed protobuf bytes, which is what `protoc --decode_raw`
and offload's own messages talk about.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, AsyncIterator

from offload.codeintel.scip.limits import Limits
from offload.codeintel.scip.model import ScipError

GZIP_MAGIC = b"\x1f\x8b"
# Decompressed bytes produced per step: bounds memory whatever one compressed chunk expands to.
_INFLATE_STEP = 1024 * 1024
_MAX_VARINT_BYTES = 10


async def inflated(chunks: AsyncIterable[bytes], limits: Limits) -> AsyncIterator[bytes]:
    """The stream's bytes, gunzipped if it starts with gzip's magic; compressed size capped."""
    source = aiter(chunks)
    head = b""
    while len(head) < len(GZIP_MAGIC):
        chunk = await anext(source, None)
        if chunk is None:
            break
        head += chunk
    if not head.startswith(GZIP_MAGIC):
        received = len(head)
        if received > limits.index_bytes:
            raise _too_big(received, limits)
        if head:
            yield head
        async for chunk in source:
            received += len(chunk)
            if received > limits.index_bytes:
                raise _too_big(received, limits)
            yield chunk
        return
    async for piece in _gunzip(head, source, limits):
        yield piece


async def _gunzip(
    head: bytes, source: AsyncIterator[bytes], limits: Limits
) -> AsyncIterator[bytes]:
    # 16 + MAX_WBITS: a gzip header and trailer (with its CRC) around deflate data.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    compressed = produced = 0
    pending = head
    while True:
        if not pending:
            chunk = await anext(source, None)
            if chunk is None:
                break
            pending = chunk
        compressed += len(pending)
        if compressed > limits.index_bytes:
            raise _too_big(compressed, limits, "compressed ")
        data = pending
        pending = b""
        while data:
            if inflater.eof:
                # Concatenated gzip members (`cat a.gz b.gz`) are one stream, as for gunzip.
                if not data.startswith(GZIP_MAGIC[: len(data)]):
                    raise ScipError(
                        f"bytes that are not gzip follow the gzip stream (at compressed byte "
                        f"{compressed - len(data):,}); upload the index file alone",
                        offset=produced,
                    )
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = inflater.decompress(data, _INFLATE_STEP)
            except zlib.error as error:
                raise ScipError(
                    f"the gzip stream is corrupt after {compressed:,} compressed bytes "
                    f"({error}); upload the index again, or uncompressed",
                    offset=produced,
                ) from error
            produced += len(out)
            if produced > limits.index_bytes:
                raise _too_big(produced, limits)
            if (
                produced > limits.gzip_ratio_grace_bytes
                and produced > limits.gzip_ratio * compressed
            ):
                raise ScipError(
                    f"the gzip stream expands more than {limits.gzip_ratio} times (to "
                    f"{produced:,} bytes from {compressed:,}); the limit is "
                    f"{limits.gzip_ratio} (MAX_GZIP_RATIO): this is not a SCIP index",
                    offset=produced,
                )
            if out:
                yield out
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    if not inflater.eof:
        raise ScipError(
            f"the gzip stream ends early, after {compressed:,} compressed bytes "
            f"({produced:,} decompressed): the upload is truncated; upload the whole file",
            offset=produced,
        )


def _too_big(size: int, limits: Limits, kind: str = "") -> ScipError:
    return ScipError(
        f"the index is more than {limits.index_bytes:,} {kind}bytes (read {size:,} so far); "
        f"the limit is {limits.index_bytes:,} bytes (MAX_INDEX_BYTES)",
        offset=size,
    )


class ByteStream:
    """Reads varints and exact byte counts from chunks, pulling only as many as it needs."""

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._chunks = aiter(chunks)
        self._buffer = bytearray()
        self._position = 0  # of the next unread byte in _buffer
        self.offset = 0  # of the next unread byte in the stream

    async def at_end(self) -> bool:
        """Whether every byte of the stream has been read."""
        while self._position == len(self._buffer):
            if not await self._fill():
                return True
        return False

    async def varint(self, what: str) -> int:
        """The next varint (at most 64 bits); `what` names it in errors."""
        start = self.offset
        while True:
            value = shift = 0
            for index in range(self._position, len(self._buffer)):
                byte = self._buffer[index]
                value |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    self.offset += index + 1 - self._position
                    self._position = index + 1
                    return value
                if index + 1 - self._position >= _MAX_VARINT_BYTES:
                    raise ScipError(
                        f"{what} at byte {start:,} is not a valid varint (more than "
                        f"{_MAX_VARINT_BYTES} bytes): the index is corrupt",
                        offset=start,
                    )
            if not await self._fill():
                raise ScipError(
                    f"the index ends inside {what} at byte {start:,}: the upload is truncated; "
                    "upload the whole file",
                    offset=start,
                )

    async def take(self, size: int, what: str) -> bytes:
        """The next `size` bytes; `what` names them in errors."""
        start = self.offset
        while len(self._buffer) - self._position < size:
            if not await self._fill():
                available = len(self._buffer) - self._position
                raise ScipError(
                    f"the index ends at byte {start + available:,}, inside {what} (bytes "
                    f"{start:,} to {start + size:,}): the upload is truncated; upload the whole "
                    "file",
                    offset=start + available,
                )
        data = bytes(self._buffer[self._position : self._position + size])
        self._position += size
        self.offset += size
        return data

    async def skip(self, size: int, what: str) -> None:
        """Pass over the next `size` bytes without holding them."""
        start = self.offset
        left = size
        while left:
            if self._position == len(self._buffer) and not await self._fill():
                raise ScipError(
                    f"the index ends at byte {start + size - left:,}, inside {what} (bytes "
                    f"{start:,} to {start + size:,}): the upload is truncated; upload the whole "
                    "file",
                    offset=start + size - left,
                )
            step = min(left, len(self._buffer) - self._position)
            self._position += step
            self.offset += step
            left -= step

    async def _fill(self) -> bool:
        chunk = await anext(self._chunks, None)
        if chunk is None:
            return False
        if self._position:
            del self._buffer[: self._position]
            self._position = 0
        self._buffer += chunk
        return True
