"""`codeintel.uploads` janitor: ends uploads past retention, unheld documents, stray files.

A completed upload older than `codeintel_upload_retention` goes unless it is the newest
completed one of its repository, root and indexer (code navigation would have nothing left
for that project otherwise); failed and canceled uploads go past retention too. Files in
`<data_dir>/uploads` that no waiting upload names are removed once an hour old: a crash
between receiving a file and queueing its upload leaves one behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from offload.clock import Clock, SystemClock
from offload.codeintel.uploads.processor import uploads_dir
from offload.codeintel.uploads.writer import delete_uploads
from offload.db.base import Database
from offload.worker.routine import Periodic, Routine

if TYPE_CHECKING:
    from offload.worker.job import WorkerContext

log = logging.getLogger(__name__)

INTERVAL = timedelta(hours=1)
# A file younger than this may belong to an upload whose row is being written.
STRAY_AFTER = timedelta(hours=1)
# Uploads deleted per transaction: keeps each one short while the worker goes on.
_PER_TRANSACTION = 100


@dataclass(frozen=True)
class Swept:
    """What one pass removed."""

    uploads: int
    documents: int
    files: int


class UploadJanitor:
    """One pass at a time over expired uploads, unheld documents and stray files."""

    def __init__(
        self,
        db: Database,
        directory: Path,
        retention: timedelta,
        *,
        clock: Clock | None = None,
        stray_after: timedelta = STRAY_AFTER,
    ) -> None:
        self.db = db
        self.directory = directory
        self.retention = retention
        self.clock = clock or SystemClock()
        self.stray_after = stray_after

    async def sweep(self) -> Swept:
        """Remove what is past its time; returns the counts."""
        cutoff = self.clock.now() - self.retention
        rows = await self.db.fetch(
            "SELECT id FROM codeintel_uploads WHERE finished_at < :cutoff AND ("
            "state IN ('failed', 'canceled') OR (state = 'completed' AND id NOT IN ("
            "SELECT MAX(id) FROM codeintel_uploads WHERE state = 'completed' "
            "GROUP BY repo_name, root, indexer))) ORDER BY id",
            {"cutoff": cutoff},
        )
        ids = [int(r["id"]) for r in rows]
        for start in range(0, len(ids), _PER_TRANSACTION):
            async with self.db.transaction() as tx:
                await delete_uploads(tx, ids[start : start + _PER_TRANSACTION])
        documents = await self.db.fetch(
            "DELETE FROM codeintel_documents WHERE NOT EXISTS (SELECT 1 FROM "
            "codeintel_upload_documents u WHERE u.document_id = codeintel_documents.id) "
            "RETURNING id"
        )
        files = await self._stray_files()
        if ids or documents or files:
            log.info(
                "codeintel uploads janitor: removed %d uploads, %d documents, %d stray files",
                len(ids),
                len(documents),
                files,
            )
        return Swept(len(ids), len(documents), files)

    async def _stray_files(self) -> int:
        rows = await self.db.fetch(
            "SELECT file_name FROM codeintel_uploads WHERE state IN "
            "('queued', 'processing', 'errored')"
        )
        waiting = {r["file_name"] for r in rows}
        oldest = time.time() - self.stray_after.total_seconds()
        return await asyncio.to_thread(_remove_strays, self.directory, waiting, oldest)


def _remove_strays(directory: Path, waiting: set[str], oldest: float) -> int:
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.iterdir():
        if path.name in waiting or not path.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < oldest:
                path.unlink()
                removed += 1
    return removed


def build(context: WorkerContext) -> list[Routine]:
    """The janitor's pass, every INTERVAL."""
    janitor = UploadJanitor(
        context.db,
        uploads_dir(context.settings.data_dir),
        context.settings.codeintel_upload_retention,
        clock=context.clock,
    )

    async def sweep() -> None:
        await janitor.sweep()

    return [Periodic("codeintel.uploads-janitor", INTERVAL, sweep, sleep=context.sleep)]
