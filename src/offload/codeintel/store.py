"""What code navigation and the upload listings read: uploads, documents, symbols' ranges."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from offload.codeintel.documents import StoredDocument, decode_document
from offload.codeintel.ranges import Range, decode_ranges
from offload.db.base import Database
from offload.db.values import parse_time

_UPLOAD_COLUMNS = (
    "id, state, queued_at, finished_at, failure_message, repo_name, commit_sha, root, indexer, "
    "index_job_id, file_name, size, uploaded_by, num_documents, num_occurrences, "
    "dropped_paths, stored_bytes, indexer_version"
)


@dataclass(frozen=True)
class UploadRow:
    """One uploaded index: where it is from, how far it got, and what it holds once processed."""

    id: int
    state: str
    repo_name: str
    commit_sha: str
    root: str
    indexer: str
    index_job_id: int | None
    size: int
    uploaded_by: str
    queued_at: datetime
    finished_at: datetime | None
    failure_message: str | None
    num_documents: int | None
    num_occurrences: int | None
    dropped_paths: int | None
    stored_bytes: int | None
    indexer_version: str | None

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        return {
            "id": self.id,
            "state": self.state,
            "repo": self.repo_name,
            "commit": self.commit_sha,
            "root": self.root,
            "indexer": self.indexer,
            "indexJobId": self.index_job_id,
            "size": self.size,
            "uploadedBy": self.uploaded_by,
            "queuedAt": self.queued_at.isoformat(),
            "finishedAt": self.finished_at.isoformat() if self.finished_at else None,
            "failureMessage": self.failure_message,
            "documents": self.num_documents,
            "occurrences": self.num_occurrences,
            "droppedPaths": self.dropped_paths,
            "storedBytes": self.stored_bytes,
            "indexerVersion": self.indexer_version,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> UploadRow:
        """Build from a codeintel_uploads row."""
        queued = parse_time(row["queued_at"])
        assert queued is not None
        return cls(
            id=int(row["id"]),
            state=row["state"],
            repo_name=row["repo_name"],
            commit_sha=row["commit_sha"],
            root=row["root"],
            indexer=row["indexer"],
            index_job_id=_int(row["index_job_id"]),
            size=int(row["size"]),
            uploaded_by=row["uploaded_by"],
            queued_at=queued,
            finished_at=parse_time(row["finished_at"]),
            failure_message=row["failure_message"],
            num_documents=_int(row["num_documents"]),
            num_occurrences=_int(row["num_occurrences"]),
            dropped_paths=_int(row["dropped_paths"]),
            stored_bytes=_int(row["stored_bytes"]),
            indexer_version=row["indexer_version"],
        )


@dataclass(frozen=True)
class SymbolRanges:
    """Where one symbol occurs in one file of one upload (its ranges decoded when first read:
    an answer cut at its limit never decodes the files it did not reach)."""

    upload_id: int
    path: str
    encoded_definitions: bytes
    encoded_references: bytes

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SymbolRanges:
        """Build from a codeintel_symbol_ranges row."""
        return cls(
            upload_id=int(row["upload_id"]),
            path=row["path"],
            encoded_definitions=bytes(row["definitions"] or b""),
            encoded_references=bytes(row["refs"] or b""),
        )

    @cached_property
    def definitions(self) -> tuple[Range, ...]:
        """Where the symbol is defined in this file."""
        return tuple(decode_ranges(self.encoded_definitions))

    @cached_property
    def references(self) -> tuple[Range, ...]:
        """Where the symbol is used in this file."""
        return tuple(decode_ranges(self.encoded_references))


class CodeintelStore:
    """Reads of processed uploads, for code navigation, the CLI, the API and the pages."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def uploads(
        self,
        *,
        repo: str | None = None,
        state: str | None = None,
        limit: int = 50,
        after_id: int | None = None,
    ) -> list[UploadRow]:
        """Uploads, newest first; the next page starts after the last id of this one."""
        where: list[str] = ["1 = 1"]
        params: dict[str, Any] = {"limit": limit}
        if repo is not None:
            where.append("repo_name = :repo")
            params["repo"] = repo
        if state is not None:
            where.append("state = :state")
            params["state"] = state
        if after_id is not None:
            where.append("id < :after")
            params["after"] = after_id
        rows = await self.db.fetch(
            f"SELECT {_UPLOAD_COLUMNS} FROM codeintel_uploads WHERE {' AND '.join(where)} "
            "ORDER BY id DESC LIMIT :limit",
            params,
        )
        return [UploadRow.from_row(r) for r in rows]

    async def upload(self, upload_id: int) -> UploadRow | None:
        """One upload by id."""
        rows = await self.db.fetch(
            f"SELECT {_UPLOAD_COLUMNS} FROM codeintel_uploads WHERE id = :id", {"id": upload_id}
        )
        return UploadRow.from_row(rows[0]) if rows else None

    async def upload_for(self, repo: str, commit: str) -> list[UploadRow]:
        """The completed uploads of `repo` at `commit` (one per root and indexer), by root."""
        rows = await self.db.fetch(
            f"SELECT {_UPLOAD_COLUMNS} FROM codeintel_uploads WHERE repo_name = :repo AND "
            "commit_sha = :commit AND state = 'completed' ORDER BY root, indexer, id DESC",
            {"repo": repo, "commit": commit},
        )
        return [UploadRow.from_row(r) for r in rows]

    async def document(self, upload_id: int, path: str) -> StoredDocument | None:
        """The document at `path` (relative to the repository root) of an upload, or None."""
        rows = await self.db.fetch(
            "SELECT d.payload FROM codeintel_upload_documents u JOIN codeintel_documents d "
            "ON d.id = u.document_id WHERE u.upload_id = :upload AND u.path = :path",
            {"upload": upload_id, "path": path},
        )
        if not rows:
            return None
        # Decompressing a large document takes a while: off the event loop.
        return await asyncio.to_thread(decode_document, bytes(rows[0]["payload"]))

    async def symbol_ranges(
        self,
        upload_ids: Sequence[int],
        symbol: str,
        *,
        definitions_only: bool = False,
        limit: int | None = None,
        after: tuple[str, int] | None = None,
    ) -> list[SymbolRanges]:
        """Where `symbol` is defined and referenced in these uploads, by path then upload.

        `definitions_only`: only the files that define it, without their references (a
        popular symbol is referenced in thousands of files, defined in one); `limit`: at most
        that many files; `after`: the files after this (path, upload id), the next page.
        """
        if not upload_ids:
            return []
        ids = {f"u{n}": int(i) for n, i in enumerate(upload_ids)}
        params: dict[str, Any] = {"sha": symbol_sha256(symbol), **ids}
        refs = "NULL AS refs" if definitions_only else "r.refs"
        where = " AND r.definitions IS NOT NULL" if definitions_only else ""
        if after is not None:
            where += (
                " AND (r.path > :after_path OR (r.path = :after_path AND r.upload_id > :after_id))"
            )
            params.update(after_path=after[0], after_id=after[1])
        cap = f" LIMIT {int(limit)}" if limit is not None else ""
        rows = await self.db.fetch(
            f"SELECT r.upload_id, r.path, r.definitions, {refs} FROM codeintel_symbol_ranges r "
            "JOIN codeintel_symbols s ON s.id = r.symbol_id WHERE s.name_sha256 = :sha AND "
            f"r.upload_id IN ({', '.join(':' + k for k in ids)}){where} "
            f"ORDER BY r.path, r.upload_id{cap}",
            params,
        )
        return [SymbolRanges.from_row(r) for r in rows]

    async def packages_defining(
        self, scheme: str, manager: str, name: str, version: str
    ) -> list[int]:
        """The completed uploads that define the package, newest first."""
        rows = await self.db.fetch(
            "SELECT p.upload_id FROM codeintel_packages p JOIN codeintel_uploads u "
            "ON u.id = p.upload_id WHERE p.scheme = :scheme AND p.manager = :manager AND "
            "p.name = :name AND p.version = :version AND p.defines = :defines AND "
            "u.state = 'completed' ORDER BY p.upload_id DESC",
            {
                "scheme": scheme,
                "manager": manager,
                "name": name,
                "version": version,
                "defines": True,
            },
        )
        return [int(r["upload_id"]) for r in rows]

    async def packages(self, upload_id: int) -> list[tuple[str, str, str, str, bool]]:
        """The packages an upload defines or references: (scheme, manager, name, version,
        defines), sorted."""
        rows = await self.db.fetch(
            "SELECT scheme, manager, name, version, defines FROM codeintel_packages "
            "WHERE upload_id = :upload ORDER BY scheme, manager, name, version",
            {"upload": upload_id},
        )
        return [
            (r["scheme"], r["manager"], r["name"], r["version"], bool(r["defines"])) for r in rows
        ]


def symbol_sha256(name: str) -> str:
    """The key a symbol name is stored under."""
    return hashlib.sha256(name.encode()).hexdigest()


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
