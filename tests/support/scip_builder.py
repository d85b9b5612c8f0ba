"""SCIP indexes built by tests, and the real uploads consumer that processes them."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

from offload.codeintel.scip import scip_pb2
from offload.codeintel.store import CodeintelStore, UploadRow
from offload.codeintel.uploads.processor import CompletingStore, UploadProcessor
from offload.codeintel.uploads.queue import SPEC
from offload.db.base import Database
from offload.queue.consumer import Consumer
from offload.queue.store import SqlQueueStore
from offload.repos.mirror import Mirrors

DEF = 1
# (range as SCIP writes it: [line, start, end] or [line, start, end line, end], symbol, roles)
Occ = tuple[list[int], str, int]
# (path, occurrences, hover text by symbol)
Doc = tuple[str, list[Occ], dict[str, str]]


def scip_index(
    documents: Sequence[Doc],
    *,
    tool: str = "scip-python",
    external: Mapping[str, str] | None = None,
) -> bytes:
    """A SCIP index of these documents, and of `external` symbols (hover text by symbol)."""
    index = scip_pb2.Index()
    index.metadata.tool_info.name = tool
    index.metadata.tool_info.version = "0.6.0"
    for path, occurrences, hover in documents:
        document = index.documents.add()
        document.relative_path = path
        for numbers, symbol, roles in occurrences:
            occurrence = document.occurrences.add()
            occurrence.range.extend(numbers)
            occurrence.symbol = symbol
            occurrence.symbol_roles = roles
        for symbol, text in hover.items():
            info = document.symbols.add()
            info.symbol = symbol
            info.documentation.append(text)
    for symbol, text in (external or {}).items():
        info = index.external_symbols.add()
        info.symbol = symbol
        info.documentation.append(text)
    return index.SerializeToString()


class Uploads:
    """Uploads of indexes into the `codeintel.uploads` queue, processed by the real consumer."""

    def __init__(self, db: Database, mirrors: Mirrors, directory: Path) -> None:
        self.db = db
        self.mirrors = mirrors
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.queue = SqlQueueStore(db, SPEC)
        self.store = CodeintelStore(db)

    async def add(
        self, repo: str, commit: str, data: bytes, *, root: str = "", indexer: str = "scip-python"
    ) -> UploadRow:
        """Upload `data` for `repo` at `commit` and process it; the completed upload."""
        name = f"{hashlib.sha256(data).hexdigest()[:16]}-{random.random():.8f}.scip"
        (self.directory / name).write_bytes(data)
        upload_id = await self.queue.enqueue(
            {
                "repo_name": repo,
                "commit_sha": commit,
                "root": root,
                "indexer": indexer,
                "file_name": name,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
        processor = UploadProcessor(self.db, self.mirrors, self.directory)
        consumer = Consumer(
            CompletingStore(self.queue, processor), processor, holder="test", poll_wait=0.05
        )
        task = asyncio.create_task(consumer.run())
        try:
            for _ in range(600):
                row = await self.store.upload(upload_id)
                if row is not None and row.state in ("completed", "failed"):
                    break
                await asyncio.sleep(0.05)
        finally:
            consumer.stop(5.0)
            await task
        assert row is not None and row.state == "completed", row and row.failure_message
        return row
