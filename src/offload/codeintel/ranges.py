"""Ranges of occurrences, encoded compactly: a symbol's definitions or references in one file.

A range is (start line, start character, end line, end character), 0-based, end exclusive.
Ranges are stored sorted, each as varints relative to the one before: the line delta, the
start character (relative when on the same line as the previous start), then the length for
a range on one line, or the lines spanned and the end character for one that is not. Most
ranges are an identifier on one line, so most take four bytes or fewer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

Range: TypeAlias = tuple[int, int, int, int]


class RangeError(ValueError):
    """Bytes that are not encoded ranges (a stored value was damaged)."""


def encode_ranges(ranges: Iterable[Range]) -> bytes:
    """The ranges, sorted, as compact bytes; negative numbers or ends before starts refused."""
    out = bytearray()
    line = char = 0
    for start_line, start_char, end_line, end_char in sorted(ranges):
        if min(start_line, start_char, end_line, end_char) < 0 or (start_line, start_char) > (
            end_line,
            end_char,
        ):
            raise ValueError(
                f"the range {(start_line, start_char, end_line, end_char)} has a negative "
                "number or ends before it starts"
            )
        delta = start_line - line
        _varint(out, delta)
        _varint(out, start_char - char if delta == 0 else start_char)
        if end_line == start_line:
            _varint(out, (end_char - start_char) << 1)
        else:
            _varint(out, ((end_line - start_line) << 1) | 1)
            _varint(out, end_char)
        line, char = start_line, start_char
    return bytes(out)


def decode_ranges(data: bytes) -> list[Range]:
    """The ranges encode_ranges() wrote, in sorted order."""
    out: list[Range] = []
    at, size = 0, len(data)
    line = char = 0
    while at < size:
        delta, at = _read(data, at)
        offset, at = _read(data, at)
        start_line = line + delta
        start_char = char + offset if delta == 0 else offset
        shape, at = _read(data, at)
        if shape & 1:
            end_char, at = _read(data, at)
            end_line = start_line + (shape >> 1)
        else:
            end_line, end_char = start_line, start_char + (shape >> 1)
        out.append((start_line, start_char, end_line, end_char))
        line, char = start_line, start_char
    return out


def _varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _read(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise RangeError(f"encoded ranges end inside a number at byte {at}")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise RangeError(f"encoded ranges hold a number too long at byte {at}")
