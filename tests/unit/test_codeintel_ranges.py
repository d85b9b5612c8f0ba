"""Encoded ranges and document payloads: what is stored reads back exactly, and compactly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload.codeintel.documents import (
    decode_document,
    encode_document,
    make_document,
    occurrence_at,
)
from offload.codeintel.ranges import RangeError, decode_ranges, encode_ranges
from offload.codeintel.scip.model import Occurrence, SymbolInfo

numbers = st.integers(min_value=0, max_value=2**40)


@st.composite
def a_range(draw: st.DrawFn) -> tuple[int, int, int, int]:
    start_line, start_char = draw(numbers), draw(numbers)
    if draw(st.booleans()):
        return (start_line, start_char, start_line, start_char + draw(numbers))
    return (start_line, start_char, start_line + draw(st.integers(1, 2**20)), draw(numbers))


@settings(max_examples=300)
@given(st.lists(a_range(), max_size=60))
def test_ranges_read_back_sorted(ranges: list[tuple[int, int, int, int]]) -> None:
    assert decode_ranges(encode_ranges(ranges)) == sorted(ranges)


def test_an_identifier_on_one_line_takes_a_few_bytes() -> None:
    ranges = [(100 + n, 8, 100 + n, 20) for n in range(100)]
    assert len(encode_ranges(ranges)) <= 4 * 100
    assert decode_ranges(encode_ranges([(3, 1, 5, 2)])) == [(3, 1, 5, 2)]


def test_damaged_or_impossible_ranges_are_refused() -> None:
    with pytest.raises(RangeError, match="end inside a number"):
        decode_ranges(encode_ranges([(1, 2, 1, 300)])[:-1])
    with pytest.raises(ValueError, match="ends before it starts"):
        encode_ranges([(4, 0, 3, 0)])


GREET = "scip-python python p 1 p/greet()."


def test_a_document_reads_back_with_its_innermost_occurrences_and_hover() -> None:
    occurrences = [
        Occurrence(4, 0, 9, 1, "scip-python python p 1 p/Greeter#", 1),
        Occurrence(5, 8, 5, 13, GREET, 1),
        Occurrence(6, 4, 6, 9, GREET, 0),
        Occurrence(6, 4, 6, 9, GREET, 0),  # a duplicate is kept once
    ]
    symbols = [SymbolInfo(GREET, ("```python\ndef greet()\n```", "Say hello."))]
    document = make_document("python", reversed(occurrences), symbols)
    encoded = encode_document(document)
    assert encoded.num_occurrences == 3
    back = decode_document(encoded.payload)
    assert back == document and back.occurrences == tuple(sorted(set(occurrences)))
    assert back.hover == {GREET: symbols[0].documentation}
    assert encode_document(back).sha256 == encoded.sha256

    inner = occurrence_at(back, 5, 10)
    assert inner is not None and inner.symbol == GREET and inner.roles == 1
    outer = occurrence_at(back, 7, 0)
    assert outer is not None and outer.symbol.endswith("Greeter#")
    assert occurrence_at(back, 9, 1) is None and occurrence_at(back, 3, 0) is None
