"""Reading SCIP indexes as a stream: real indexes built with the bindings, plain and gzipped,
read back document by document; corrupt, truncated and oversized ones; symbol names."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload.codeintel.scip import scip_pb2
from offload.codeintel.scip.limits import Limits
from offload.codeintel.scip.model import (
    Document,
    IndexPart,
    Metadata,
    Occurrence,
    ScipError,
    SymbolInfo,
    is_definition,
)
from offload.codeintel.scip.reader import file_chunks, read_index
from offload.codeintel.scip.symbol import Descriptor, Symbol, SymbolError, parse_symbol

GREET = "scip-python python mypkg 0.1.0 mypkg/util/greet()."
MAIN = "scip-python python mypkg 0.1.0 mypkg/main/run()."
PRINT = "scip-python python python-stdlib 3.11 builtins/print()."
DEFINITION = scip_pb2.SymbolRole.Definition


def build_index(*, metadata_last: bool = False, documents: int = 2) -> bytes:
    """A small index as scip-python writes one: a definition used from another file."""
    index = scip_pb2.Index()
    util = index.documents.add(relative_path="mypkg/util.py", language="python")
    util.occurrences.add(range=[0, 4, 9], symbol=GREET, symbol_roles=DEFINITION)
    util.occurrences.add(range=[1, 4, 9], symbol=PRINT)
    util.occurrences.add(range=[1, 0, 3], syntax_kind=scip_pb2.Keyword)  # highlighting only
    util.symbols.add(symbol=GREET, documentation=["```python\ndef greet()\n```", "Say hi."])
    if documents > 1:
        main = index.documents.add(relative_path="mypkg/main.py")
        main.occurrences.add(range=[2, 4, 2, 9], symbol=GREET, symbol_roles=scip_pb2.Import)
        main.occurrences.add(range=[4, 0, 6, 1], symbol=MAIN, symbol_roles=DEFINITION)
        main.occurrences.add(range=[5, 4, 5, 9], symbol=GREET)
        main.symbols.add(symbol=MAIN)
        main.symbols.add(symbol="local 0", documentation=["a local"])
    index.external_symbols.add(symbol=PRINT, documentation=["Print the values."])
    metadata = scip_pb2.Index()
    metadata.metadata.tool_info.name = "scip-python"
    metadata.metadata.tool_info.version = "0.6.0"
    metadata.metadata.tool_info.arguments.extend(["index", "."])
    metadata.metadata.project_root = "file:///src/mypkg"
    metadata.metadata.text_document_encoding = scip_pb2.UTF8
    # Protobuf merges concatenated messages: this is how a tool writes its metadata last.
    parts = [metadata.SerializeToString(), index.SerializeToString()]
    return b"".join(reversed(parts) if metadata_last else parts)


EXPECTED: list[IndexPart] = [
    Metadata("scip-python", "0.6.0", ("index", "."), "file:///src/mypkg", "UTF8"),
    Document(
        "mypkg/util.py",
        "python",
        (Occurrence(0, 4, 0, 9, GREET, 1), Occurrence(1, 4, 1, 9, PRINT, 0)),
        (SymbolInfo(GREET, ("```python\ndef greet()\n```", "Say hi.")),),
    ),
    Document(
        "mypkg/main.py",
        "",
        (
            Occurrence(2, 4, 2, 9, GREET, 2),
            Occurrence(4, 0, 6, 1, MAIN, 1),
            Occurrence(5, 4, 5, 9, GREET, 0),
        ),
        (SymbolInfo(MAIN), SymbolInfo("local 0", ("a local",))),
    ),
    SymbolInfo(PRINT, ("Print the values.",)),
]


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    """The bytes as an upload's body arrives: in chunks of `size`."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def read(data: bytes, *, size: int = 4096, limits: Limits | None = None) -> list[IndexPart]:
    """Every part read_index() yields for `data`."""

    async def collect() -> list[IndexPart]:
        return [part async for part in read_index(chunked(data, size), limits=limits)]

    return asyncio.run(collect())


def error_of(data: bytes, *, size: int = 4096, limits: Limits | None = None) -> str:
    """The message of the ScipError reading `data` raises."""
    with pytest.raises(ScipError) as caught:
        read(data, size=size, limits=limits)
    return str(caught.value)


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_an_index_reads_as_metadata_documents_and_external_symbols(size: int) -> None:
    assert read(build_index(), size=size) == EXPECTED


@pytest.mark.parametrize("held_in_memory", [1 << 20, 16])
def test_metadata_written_last_is_still_read_first(held_in_memory: int) -> None:
    data = build_index(metadata_last=True)
    assert data[0] != 0x0A  # the first field really is a document, not the metadata
    assert read(data, size=5, limits=Limits(held_in_memory=held_in_memory)) == EXPECTED


def test_an_index_without_metadata_reads_its_documents() -> None:
    index = scip_pb2.Index.FromString(build_index())
    index.ClearField("metadata")
    assert read(index.SerializeToString()) == EXPECTED[1:]


@pytest.mark.parametrize("size", [1, 13, 4096])
def test_gzipped_indexes_read_like_plain_ones(size: int) -> None:
    assert read(gzip.compress(build_index()), size=size) == EXPECTED
    # `cat a.gz b.gz` is one stream for gunzip, and so for offload.
    plain = build_index(metadata_last=True)
    halves = gzip.compress(plain[:40]) + gzip.compress(plain[40:])
    assert read(halves, size=size) == EXPECTED


def test_an_index_file_is_read_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "index.scip.gz"
    path.write_bytes(gzip.compress(build_index()))

    async def collect() -> list[IndexPart]:
        return [part async for part in read_index(file_chunks(path, size=10))]

    assert asyncio.run(collect()) == EXPECTED


def test_fields_of_newer_scip_versions_are_skipped() -> None:
    # Field 9 as a varint, field 10 length-delimited, field 11 fixed64, field 12 fixed32.
    unknown = b"\x48\x96\x01" + b"\x52\x03abc" + b"\x59" + bytes(8) + b"\x65" + bytes(4)
    assert read(unknown + build_index() + unknown) == EXPECTED


def test_a_repeated_metadata_must_be_the_same() -> None:
    data = build_index()
    metadata = data[: 2 + data[1]]
    assert read(data + metadata) == EXPECTED
    other = scip_pb2.Index()
    other.metadata.tool_info.name = "scip-typescript"
    message = error_of(data + other.SerializeToString())
    assert "second, different metadata at byte" in message


def test_roles_say_which_occurrences_define() -> None:
    definition = scip_pb2.SymbolRole.Definition
    assert is_definition(definition)
    assert is_definition(definition | scip_pb2.SymbolRole.WriteAccess)
    assert not is_definition(scip_pb2.SymbolRole.Import | scip_pb2.SymbolRole.ReadAccess)
    assert not is_definition(0)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x12" + b"\xff" * 11, "the length of documents[0] (at byte 0) at byte 1 is not a valid"),
        (b"\x10\x01", "is documents (field 2) with wire type 0, where SCIP has 2"),
        (b"\x0d\x00\x00\x00\x00", "is metadata (field 1) with wire type 5"),
        (b"\x12\x05abc", "the index ends at byte 5, inside documents[0] (at byte 0) (bytes 2"),
        (b"\x12\x03\xff\xff\xff", "documents[0] (at byte 0) is not a valid SCIP document"),
        (b"\x1a\x02\x0a\xff", "external_symbols[0] (at byte 0) is not a valid SCIP symbol"),
        (b"\x0a\x02\x12\xff", "the metadata (at byte 0) is not a valid SCIP metadata"),
        (b"\x00\x00", "the bytes at 0 are not a protobuf field (tag 0"),
        (b"\x4b", "tag 75: field 9, wire type 3"),
        (b"\x12", "the index ends inside the length of documents[0] (at byte 0) at byte 1"),
        (b"\x52\x0aabc", "inside field 10 (at byte 0) (bytes 2 to 12): the upload is truncated"),
    ],
)
def test_corrupt_streams_say_what_and_where(data: bytes, expected: str) -> None:
    assert expected in error_of(data, size=1)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.occurrences[0].ClearField("range"), "occurrences[0] has the range []"),
        (lambda d: d.occurrences[1].range.pop(), "occurrences[1] has the range [1, 4]"),
        (lambda d: d.occurrences[0].range.__setitem__(1, -1), "with a negative position"),
        (lambda d: d.occurrences[0].range.__setitem__(1, 10), "with an end before its start"),
        (lambda d: setattr(d, "relative_path", "../etc/passwd"), "'.' or '..' component"),
        (lambda d: setattr(d, "relative_path", "/etc/passwd"), "is not a relative path"),
        (lambda d: setattr(d, "relative_path", ""), "relative_path is empty"),
        (lambda d: d.symbols[0].ClearField("symbol"), "symbols[0] has an empty symbol name"),
    ],
)
def test_malformed_documents_are_refused_with_their_path(
    change: Callable[[scip_pb2.Document], object], expected: str
) -> None:
    index = scip_pb2.Index.FromString(build_index())
    change(index.documents[0])
    message = error_of(index.SerializeToString())
    assert message.startswith("documents[0] (")
    assert expected in message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_prefix_reads_whole_parts_or_fails_clearly(data: st.DataObject) -> None:
    full = build_index(metadata_last=data.draw(st.booleans()))
    end = data.draw(st.integers(0, len(full)))
    size = data.draw(st.integers(1, 64))
    try:
        parts = read(full[:end], size=size)
    except ScipError as error:
        assert "truncated" in str(error)
        return
    # A prefix that ends between two fields is a smaller index: what it holds is whole.
    assert all(part in EXPECTED for part in parts)


@settings(max_examples=100, deadline=None)
@given(end=st.integers(1, len(gzip.compress(build_index())) - 1), size=st.integers(1, 64))
def test_a_truncated_gzip_upload_fails(end: int, size: int) -> None:
    message = error_of(gzip.compress(build_index())[:end], size=size)
    assert "truncated" in message or "corrupt" in message


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_flipped_bytes_read_or_fail_with_a_scip_error(data: st.DataObject) -> None:
    compress = data.draw(st.booleans())
    raw = build_index(metadata_last=data.draw(st.booleans()))
    damaged = bytearray(gzip.compress(raw) if compress else raw)
    for _ in range(data.draw(st.integers(1, 3))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        parts = read(bytes(damaged), size=data.draw(st.integers(1, 64)))
    except ScipError as error:
        assert str(error)
        return
    assert all(isinstance(part, Metadata | Document | SymbolInfo) for part in parts)


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (Limits(index_bytes=100), "the limit is 100 bytes (MAX_INDEX_BYTES)"),
        (
            Limits(document_bytes=100),
            "documents[0] (at byte 55) is 247 bytes; the limit is 100 (MAX",
        ),
        (Limits(metadata_bytes=20), "the limit is 20 (MAX_METADATA_BYTES)"),
        (
            Limits(documents=1),
            "more than 1 documents (at byte 305); the limit is 1 (MAX_DOCUMENTS)",
        ),
        (
            Limits(occurrences=2),
            "('mypkg/util.py', at byte 55) has 3 occurrences; the limit is 2 per",
        ),
        (Limits(symbols=3), "more than 3 symbols by external_symbols[0]"),
        (
            Limits(string_chars=20),
            "occurrences[0].symbol is 50 characters; the limit is 20 (MAX_STRING",
        ),
        (
            Limits(documentation_chars=10),
            "symbols[0]: documentation[0] is 25 characters; the limit is 10",
        ),
    ],
)
def test_each_limit_refuses_an_index_over_it(limits: Limits, expected: str) -> None:
    assert expected in error_of(build_index(), limits=limits)
    assert expected in error_of(gzip.compress(build_index()), size=3, limits=limits)


def test_the_total_limit_counts_the_decompressed_bytes() -> None:
    limits = Limits(index_bytes=len(build_index()) - 1)
    message = error_of(gzip.compress(build_index()), limits=limits)
    assert f"the limit is {len(build_index()) - 1:,} bytes (MAX_INDEX_BYTES)" in message


def test_a_gzip_bomb_is_stopped_early() -> None:
    # A document said to be 60 MiB long (under MAX_DOCUMENT_BYTES), of zeros: 60 KiB gzipped.
    bomb = gzip.compress(b"\x12\x80\x80\x80\x1e" + bytes(60 << 20), compresslevel=9)
    with pytest.raises(ScipError) as caught:
        read(bomb, size=64 * 1024)
    assert "expands more than 100 times" in str(caught.value)
    assert "(MAX_GZIP_RATIO): this is not a SCIP index" in str(caught.value)
    assert caught.value.offset is not None and caught.value.offset < 8 << 20


def test_gzip_followed_by_other_bytes_is_refused() -> None:
    message = error_of(gzip.compress(build_index()) + b"junk")
    compressed = len(gzip.compress(build_index()))
    assert f"not gzip follow the gzip stream (at compressed byte {compressed})" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GREET,
            Symbol(
                "scip-python",
                "python",
                "mypkg",
                "0.1.0",
                (
                    Descriptor("mypkg", "namespace"),
                    Descriptor("util", "namespace"),
                    Descriptor("greet", "method"),
                ),
            ),
        ),
        ("local 12", Symbol(local_id="12")),
        (
            "scip-typescript npm @types/node 18.0.0 `fs.d.ts`/`fs`/readFile().",
            Symbol(
                "scip-typescript",
                "npm",
                "@types/node",
                "18.0.0",
                (
                    Descriptor("fs.d.ts", "namespace"),
                    Descriptor("fs", "namespace"),
                    Descriptor("readFile", "method"),
                ),
            ),
        ),
        (
            "scip-java maven com.example:lib 1.0 com/example/Foo#bar(+1).[T](x)",
            Symbol(
                "scip-java",
                "maven",
                "com.example:lib",
                "1.0",
                (
                    Descriptor("com", "namespace"),
                    Descriptor("example", "namespace"),
                    Descriptor("Foo", "type"),
                    Descriptor("bar", "method", "+1"),
                    Descriptor("T", "type_parameter"),
                    Descriptor("x", "parameter"),
                ),
            ),
        ),
        (
            "my  scheme . . . `a``b`.c:d!",
            Symbol(
                "my scheme",
                "",
                "",
                "",
                (Descriptor("a`b", "term"), Descriptor("c", "meta"), Descriptor("d", "macro")),
            ),
        ),
        (
            "rust-analyzer cargo std 1.0  beta vec/Vec#",
            Symbol(
                "rust-analyzer",
                "cargo",
                "std",
                "1.0 beta",
                (Descriptor("vec", "namespace"), Descriptor("Vec", "type")),
            ),
        ),
    ],
)
def test_symbol_names_parse_into_their_parts(text: str, expected: Symbol) -> None:
    symbol = parse_symbol(text)
    assert symbol == expected
    assert symbol.is_local == text.startswith("local ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "at column 1: it ends before the scheme and its space"),
        (" python p 1 x.", "at column 1: the scheme is empty"),
        ("local ", "at column 7: a local symbol's id must be letters and digits"),
        ("local a b", "a local symbol's id must be letters and digits"),
        ("s m p 1", "at column 8: it ends before the package version and its space"),
        ("s m  p 1 x.", "it ends before the package version"),
        ("s  m p 1 x.", "at column 12: it ends before the package version"),
        ("s m p 1 ", "at column 9: there are no descriptors after the package"),
        ("s m p 1 foo", "at column 12: the descriptor 'foo' has no suffix"),
        ("s m p 1 foo%", "at column 12: '%' is not a descriptor suffix"),
        ("s m p 1 `foo", "at column 9: the quoted name has no closing backtick"),
        ("s m p 1 ``.", "the quoted name is empty"),
        ("s m p 1 foo(.", "at column 13: expected ')', found '.'"),
        ("s m p 1 foo()", "at column 14: expected '.', found the end"),
        ("s m p 1 [T", "expected ']', found the end"),
        ("s m p 1 /", "at column 9: expected a name, found '/'"),
    ],
)
def test_malformed_symbol_names_say_what_and_where(text: str, expected: str) -> None:
    with pytest.raises(SymbolError) as caught:
        parse_symbol(text)
    assert f"symbol {text!r} is malformed" in str(caught.value)
    assert expected in str(caught.value)
