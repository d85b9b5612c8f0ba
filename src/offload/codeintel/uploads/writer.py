"""Writing one processed upload: its documents, symbols' ranges and packages, in batches.

Rows are written batch by batch while the index is read, then one transaction replaces the
older uploads of the same repository, commit, root and indexer and completes the upload, so
code navigation sees the old upload or the new one, never neither. A failed upload's rows
are removed again (discard()); its upload row stays, failed, with the message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from offload.codeintel.documents import (
    EncodedDocument,
    StoredDocument,
    decode_document,
    encode_document,
)
from offload.codeintel.ranges import Range, encode_ranges
from offload.codeintel.scip.model import is_definition
from offload.codeintel.scip.symbol import SymbolError, parse_symbol
from offload.db.base import Database, Transaction
from offload.queue.record import Lease, NotOwned
from offload.queue.states import State

# Rows per multi-row statement: far below SQLite's 32,766 parameters, and few round trips.
_ROWS_PER_STATEMENT = 300

Package = tuple[str, str, str, str]  # scheme, manager, name, version
T = TypeVar("T")


@dataclass
class Batch:
    """One batch of documents, encoded (CPU work, done off the event loop by prepare())."""

    documents: list[tuple[str, EncodedDocument]] = field(default_factory=list)
    # (path, symbol, encoded definitions or None, encoded references or None)
    ranges: list[tuple[str, str, bytes | None, bytes | None]] = field(default_factory=list)
    # Each package the batch's symbols belong to, and whether the batch defines one of them.
    packages: dict[Package, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What the completed upload holds, stored on its row."""

    num_documents: int
    num_occurrences: int
    dropped_paths: int
    indexer_version: str


def prepare(documents: Sequence[tuple[str, StoredDocument]]) -> Batch:
    """Encode each document and gather its symbols' ranges and packages (pure CPU)."""
    batch = Batch()
    for path, document in documents:
        batch.documents.append((path, encode_document(document)))
        where: dict[str, tuple[list[Range], list[Range]]] = {}
        for occurrence in document.occurrences:
            symbol = occurrence.symbol
            # Local symbols never leave their file: navigation answers them from the document.
            if symbol.startswith("local "):
                continue
            definitions, references = where.setdefault(symbol, ([], []))
            defines = is_definition(occurrence.roles)
            (definitions if defines else references).append(occurrence[:4])
            package = _package(symbol)
            if package is not None:
                batch.packages[package] = batch.packages.get(package, False) or defines
        for symbol, (definitions, references) in where.items():
            batch.ranges.append(
                (
                    path,
                    symbol,
                    encode_ranges(definitions) if definitions else None,
                    encode_ranges(references) if references else None,
                )
            )
    return batch


_PACKAGES: dict[str, Package | None] = {}


def _package(symbol: str) -> Package | None:
    known = _PACKAGES.get(symbol, ())
    if known != ():
        return known  # type: ignore[return-value]
    try:
        parsed = parse_symbol(symbol)
    except SymbolError:
        found = None  # a malformed name still navigates; it just joins no package
    else:
        found = (parsed.scheme, parsed.manager, parsed.package, parsed.version)
        if not parsed.package:
            found = None
    if len(_PACKAGES) > 100_000:  # symbols of past uploads: bound the cache
        _PACKAGES.clear()
    _PACKAGES[symbol] = found
    return found


class UploadWriter:
    """The rows of one upload being processed."""

    def __init__(self, db: Database, upload_id: int) -> None:
        self.db = db
        self.upload_id = upload_id
        self.symbol_ids: dict[str, int] = {}
        self.document_ids: set[int] = set()
        self.written: set[str] = set()
        self.packages: dict[Package, bool] = {}
        self.stored_bytes = 0
        self.occurrences = 0

    async def write(self, batch: Batch) -> None:
        """Store one batch: documents (shared when already stored), paths, symbols, ranges."""
        for package, defines in batch.packages.items():
            self.packages[package] = self.packages.get(package, False) or defines
        await self._documents(batch.documents)
        await self._symbols({symbol for _, symbol, _, _ in batch.ranges})
        rows: list[dict[str, Any]] = [
            {
                "upload": self.upload_id,
                "symbol": self.symbol_ids[symbol],
                "path": path,
                "defs": defs,
                "refs": refs,
            }
            for path, symbol, defs, refs in batch.ranges
        ]
        if rows:
            await self.db.executemany(
                "INSERT INTO codeintel_symbol_ranges (upload_id, symbol_id, path, definitions, "
                "refs) VALUES (:upload, :symbol, :path, :defs, :refs)",
                rows,
            )
        self.stored_bytes += sum(len(d or b"") + len(r or b"") for _, _, d, r in batch.ranges)

    async def _documents(self, documents: Sequence[tuple[str, EncodedDocument]]) -> None:
        by_sha = {encoded.sha256: encoded for _, encoded in documents}
        ids: dict[str, int] = {}
        # One transaction for the documents and the paths naming them: a document is never
        # stored without a path that keeps the janitor from taking it.
        async with self.db.transaction() as tx:
            shas = sorted(by_sha)
            for chunk in _chunks(shas):
                values: list[str] = []
                params: dict[str, Any] = {}
                for n, sha in enumerate(chunk):
                    values.append(f"(:h{n}, :p{n}, :n{n})")
                    encoded = by_sha[sha]
                    params |= {
                        f"h{n}": sha,
                        f"p{n}": encoded.payload,
                        f"n{n}": encoded.num_occurrences,
                    }
                # DO UPDATE (of nothing) rather than DO NOTHING: RETURNING then names the rows
                # that were already there too, and the row stays locked until the paths are in.
                rows = await tx.fetch(
                    "INSERT INTO codeintel_documents (sha256, payload, num_occurrences) VALUES "
                    f"{', '.join(values)} ON CONFLICT (sha256) DO UPDATE SET sha256 = "
                    "excluded.sha256 RETURNING id, sha256",
                    params,
                )
                ids |= {r["sha256"]: int(r["id"]) for r in rows}
            for chunk_docs in _chunks(list(documents)):
                values, params = [], {"upload": self.upload_id}
                for n, (path, encoded) in enumerate(chunk_docs):
                    values.append(f"(:upload, :path{n}, :doc{n})")
                    params |= {f"path{n}": path, f"doc{n}": ids[encoded.sha256]}
                await tx.fetch(
                    "INSERT INTO codeintel_upload_documents (upload_id, path, document_id) "
                    f"VALUES {', '.join(values)}",
                    params,
                )
        self.document_ids.update(ids.values())
        for path, encoded in documents:
            self.written.add(path)
            self.stored_bytes += len(encoded.payload)
            self.occurrences += encoded.num_occurrences

    async def _symbols(self, names: Iterable[str]) -> None:
        new = sorted(n for n in names if n not in self.symbol_ids)
        for chunk in _chunks(new):
            values: list[str] = []
            params: dict[str, Any] = {}
            by_sha: dict[str, str] = {}
            for n, name in enumerate(chunk):
                sha = hashlib.sha256(name.encode()).hexdigest()
                by_sha[sha] = name
                values.append(f"(:h{n}, :s{n})")
                params |= {f"h{n}": sha, f"s{n}": name}
            rows = await self.db.fetch(
                "INSERT INTO codeintel_symbols (name_sha256, name) VALUES "
                f"{', '.join(values)} ON CONFLICT (name_sha256) DO UPDATE SET name = "
                "excluded.name RETURNING id, name_sha256",
                params,
            )
            for row in rows:
                self.symbol_ids[by_sha[row["name_sha256"]]] = int(row["id"])

    async def stored(self, path: str) -> StoredDocument:
        """The document already written at `path` (to merge a later one of the same path)."""
        rows = await self.db.fetch(
            "SELECT d.payload FROM codeintel_upload_documents u JOIN codeintel_documents d "
            "ON d.id = u.document_id WHERE u.upload_id = :upload AND u.path = :path",
            {"upload": self.upload_id, "path": path},
        )
        return decode_document(bytes(rows[0]["payload"]))

    async def forget(self, paths: Sequence[str]) -> None:
        """Remove what was written for these paths, to write them again merged."""
        async with self.db.transaction() as tx:
            for path in paths:
                params = {"upload": self.upload_id, "path": path}
                rows = await tx.fetch(
                    "DELETE FROM codeintel_upload_documents WHERE upload_id = :upload AND "
                    "path = :path RETURNING document_id",
                    params,
                )
                await tx.fetch(
                    "DELETE FROM codeintel_symbol_ranges WHERE upload_id = :upload AND "
                    "path = :path",
                    params,
                )
                for row in rows:
                    document = await tx.fetch(
                        "SELECT LENGTH(payload) AS size, num_occurrences FROM "
                        "codeintel_documents WHERE id = :id",
                        {"id": row["document_id"]},
                    )
                    self.stored_bytes -= int(document[0]["size"])
                    self.occurrences -= int(document[0]["num_occurrences"])
                self.written.discard(path)

    async def finish(self, lease: Lease, outcome: Outcome, now: datetime) -> State:
        """Replace the older uploads of the same commit, root and indexer and complete this
        one, in one transaction; NotOwned when the lease was lost meanwhile."""
        async with self.db.transaction() as tx:
            key = await tx.fetch(
                "SELECT repo_name, commit_sha, root, indexer FROM codeintel_uploads WHERE id = :id",
                {"id": self.upload_id},
            )
            older = await tx.fetch(
                "SELECT id FROM codeintel_uploads WHERE repo_name = :repo_name AND "
                "commit_sha = :commit_sha AND root = :root AND indexer = :indexer AND "
                "state = 'completed' AND id < :id",
                {**key[0], "id": self.upload_id},
            )
            await delete_uploads(tx, [int(r["id"]) for r in older])
            for (scheme, manager, name, version), defines in sorted(self.packages.items()):
                await tx.fetch(
                    "INSERT INTO codeintel_packages (upload_id, scheme, manager, name, version, "
                    "defines) VALUES (:upload, :scheme, :manager, :name, :version, :defines)",
                    {
                        "upload": self.upload_id,
                        "scheme": scheme,
                        "manager": manager,
                        "name": name,
                        "version": version,
                        "defines": defines,
                    },
                )
            rows = await tx.fetch(
                "UPDATE codeintel_uploads SET state = CASE WHEN cancel THEN 'canceled' ELSE "
                "'completed' END, finished_at = :now, num_documents = :documents, "
                "num_occurrences = :occurrences, dropped_paths = :dropped, stored_bytes = "
                ":stored, indexer_version = :version WHERE id = :id AND state = 'processing' "
                "AND worker_hostname = :holder AND lease_token = :token RETURNING state",
                {
                    "now": now,
                    "documents": outcome.num_documents,
                    "occurrences": outcome.num_occurrences,
                    "dropped": outcome.dropped_paths,
                    "stored": self.stored_bytes,
                    "version": outcome.indexer_version,
                    "id": self.upload_id,
                    "holder": lease.holder,
                    "token": lease.token,
                },
            )
            if not rows:
                raise NotOwned(lease, "complete")
            return State(rows[0]["state"])

    async def discard(self) -> None:
        """Remove every row written for the upload (its own row stays, to say why)."""
        async with self.db.transaction() as tx:
            await delete_rows(tx, [self.upload_id], self.document_ids)


async def delete_uploads(tx: Transaction, upload_ids: Sequence[int]) -> None:
    """Delete uploads, their rows, and their documents that no other upload holds."""
    if not upload_ids:
        return
    ids, params = _in(upload_ids)
    documents = await tx.fetch(
        f"SELECT DISTINCT document_id FROM codeintel_upload_documents WHERE upload_id IN ({ids})",
        params,
    )
    await delete_rows(tx, upload_ids, {int(r["document_id"]) for r in documents})
    await tx.fetch(f"DELETE FROM codeintel_uploads WHERE id IN ({ids})", params)


async def delete_rows(
    tx: Transaction, upload_ids: Sequence[int], document_ids: Iterable[int]
) -> None:
    """Delete what processing wrote for uploads, and those documents no upload still holds."""
    ids, params = _in(upload_ids)
    for table in ("codeintel_symbol_ranges", "codeintel_upload_documents", "codeintel_packages"):
        await tx.fetch(f"DELETE FROM {table} WHERE upload_id IN ({ids})", params)
    for chunk in _chunks(sorted(document_ids)):
        documents, params = _in(chunk)
        await tx.fetch(
            f"DELETE FROM codeintel_documents WHERE id IN ({documents}) AND NOT EXISTS "
            "(SELECT 1 FROM codeintel_upload_documents u WHERE u.document_id = "
            "codeintel_documents.id)",
            params,
        )


def _in(values: Sequence[int]) -> tuple[str, dict[str, int]]:
    params = {f"i{n}": int(v) for n, v in enumerate(values)}
    return ", ".join(f":{k}" for k in params), params


def _chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), _ROWS_PER_STATEMENT):
        yield items[start : start + _ROWS_PER_STATEMENT]
