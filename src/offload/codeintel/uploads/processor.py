"""`codeintel.uploads`: turns each uploaded SCIP index into documents, symbols and ranges.

The index is streamed from `<data_dir>/uploads/<file_name>` a document at a time. Documents
whose path (under the upload's root) is not a file at the commit are dropped and counted;
documents of the same path are merged. Batches of documents are encoded in a thread, so the
worker's other routines and its heartbeats keep running, and written by UploadWriter; the
upload is completed in the transaction that replaces older uploads of its commit, root and
indexer. The file is deleted when processing ends, whatever the outcome; an upload that
fails leaves no rows but its own, with the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from offload.clock import Clock, SystemClock
from offload.codeintel.documents import StoredDocument, make_document
from offload.codeintel.scip.limits import Limits
from offload.codeintel.scip.model import Document, Metadata, ScipError
from offload.codeintel.scip.reader import file_chunks, read_index
from offload.codeintel.uploads.queue import NAME, SPEC
from offload.codeintel.uploads.writer import Outcome, UploadWriter, prepare
from offload.db.base import Database
from offload.queue.consumer import Consumer, JobFailed
from offload.queue.record import Heartbeat, Lease, Record
from offload.queue.states import State
from offload.queue.store import SqlQueueStore
from offload.repos.mirror import GitError, Mirrors, run_git
from offload.worker.routine import ConsumerRoutine, Routine

if TYPE_CHECKING:
    from offload.worker.job import WorkerContext

log = logging.getLogger(__name__)

# A batch is written once it holds this many documents or occurrences: bounds memory, and
# keeps statements large enough to be cheap per row.
BATCH_DOCUMENTS = 500
BATCH_OCCURRENCES = 200_000


def uploads_dir(data_dir: Path) -> Path:
    """Where uploaded indexes wait for processing."""
    return data_dir / "uploads"


class UploadProcessor:
    """The handler of the `codeintel.uploads` queue."""

    def __init__(
        self,
        db: Database,
        mirrors: Mirrors,
        directory: Path,
        *,
        limits: Limits | None = None,
        clock: Clock | None = None,
        batch_documents: int = BATCH_DOCUMENTS,
    ) -> None:
        self.db = db
        self.mirrors = mirrors
        self.directory = directory
        self.limits = limits or Limits()
        self.clock = clock or SystemClock()
        self.batch_documents = batch_documents
        # Leases whose upload completed inside the processor's own transaction: the
        # consumer's mark_complete is answered from here (see CompletingStore).
        self.completed: dict[Lease, State] = {}

    async def handle(self, record: Record) -> None:
        """Process one upload; a bad index or an unknown commit fails it for good."""
        name = str(record.fields["file_name"])
        if not name or "/" in name or name.startswith("."):
            raise JobFailed(f"upload {record.id} names the file {name!r}, not a plain file name")
        file = self.directory / name
        writer = UploadWriter(self.db, record.id)
        try:
            outcome = await self._process(record, file, writer)
            self.completed[record.lease] = await writer.finish(
                record.lease, outcome, self.clock.now()
            )
        except asyncio.CancelledError:
            # Handed back to the queue (shutdown, lost lease): the file stays for the next
            # attempt, the rows written so far go.
            await asyncio.shield(writer.discard())
            raise
        except BaseException:
            await writer.discard()
            await asyncio.to_thread(_unlink, file)
            raise
        await asyncio.to_thread(_unlink, file)

    async def _process(self, record: Record, file: Path, writer: UploadWriter) -> Outcome:
        fields = record.fields
        repo, commit = str(fields["repo_name"]), str(fields["commit_sha"])
        root = str(fields["root"] or "")
        paths = await self._paths(repo, commit)
        if not await asyncio.to_thread(file.is_file):
            raise JobFailed(
                f"upload {record.id}: its index file {file} is gone; upload the index again"
            )
        pending: dict[str, list[Document]] = {}
        held = dropped = 0
        version = ""
        try:
            async for part in read_index(file_chunks(file), limits=self.limits):
                if isinstance(part, Metadata):
                    version = part.tool_version
                if not isinstance(part, Document):
                    continue  # external symbols: their hover text is not kept yet
                path = _in_repository(root, part.path)
                if path is None or path not in paths:
                    dropped += 1
                    continue
                pending.setdefault(path, []).append(part)
                held += len(part.occurrences)
                if len(pending) >= self.batch_documents or held >= BATCH_OCCURRENCES:
                    await self._flush(pending, writer)
                    pending, held = {}, 0
            await self._flush(pending, writer)
        except ScipError as error:
            raise JobFailed(f"the index of upload {record.id} cannot be read: {error}") from error
        return Outcome(
            num_documents=len(writer.written),
            num_occurrences=writer.occurrences,
            dropped_paths=dropped,
            indexer_version=version,
        )

    async def _paths(self, repo: str, commit: str) -> frozenset[str]:
        """The files of the commit, from the repository's mirror."""
        try:
            mirror = self.mirrors.existing(repo)
        except (GitError, ValueError) as error:
            raise JobFailed(
                f"the upload is for repository {repo!r}, which has no mirror here ({error}); "
                "add it with `offload repos add` and upload the index again"
            ) from error
        resolved = await self.mirrors.resolve(repo, commit)
        if resolved is None or not resolved.startswith(commit.lower()):
            raise JobFailed(
                f"the upload is for commit {commit} of {repo}, which its mirror does not hold; "
                "run `offload repos sync` if it was pushed since, then upload the index again"
            )
        listing = await run_git(["ls-tree", "-r", "--name-only", "-z", resolved], cwd=mirror)
        return frozenset(p for p in listing.split("\0") if p)

    async def _flush(self, pending: dict[str, list[Document]], writer: UploadWriter) -> None:
        if not pending:
            return
        again = [path for path in pending if path in writer.written]
        earlier = {path: await writer.stored(path) for path in again}
        if again:
            await writer.forget(again)
        batch = await asyncio.to_thread(prepare, _merged(pending, earlier))
        await writer.write(batch)


def _merged(
    pending: dict[str, list[Document]], earlier: dict[str, StoredDocument]
) -> list[tuple[str, StoredDocument]]:
    """One document per path: those of the same path (in this batch or written before)
    merged into one."""
    out = []
    for path, documents in sorted(pending.items()):
        occurrences = [o for d in documents for o in d.occurrences]
        symbols = [s for d in documents for s in d.symbols]
        language = next((d.language for d in documents if d.language), "")
        stored = earlier.get(path)
        if stored is not None:
            occurrences.extend(stored.occurrences)
            language = stored.language or language
            document = make_document(language, occurrences, symbols)
            hover = {**document.hover, **stored.hover}
            document = StoredDocument(document.language, document.occurrences, hover)
        else:
            document = make_document(language, occurrences, symbols)
        out.append((path, document))
    return out


def _in_repository(root: str, path: str) -> str | None:
    """The document's path from the repository's root, or None when it points outside."""
    joined = posixpath.normpath(posixpath.join(root, path)) if root else path
    if joined.startswith("/") or joined == ".." or joined.startswith("../"):
        return None
    return joined


def _unlink(file: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        file.unlink()


class CompletingStore:
    """The queue store the uploads consumer uses: an upload the processor already completed
    (in the transaction that replaced the older ones) is reported as such, not again."""

    def __init__(self, store: SqlQueueStore, processor: UploadProcessor) -> None:
        self.store = store
        self.processor = processor

    async def dequeue(self, holder: str, *, limit: int = 1, wait: float = 0.0) -> list[Record]:
        """Lease up to `limit` uploads."""
        return await self.store.dequeue(holder, limit=limit, wait=wait)

    async def heartbeat(self, holder: str, ids: Sequence[int]) -> Heartbeat:
        """Keep leases alive."""
        return await self.store.heartbeat(holder, ids)

    async def mark_complete(self, lease: Lease) -> State:
        """The state the processor's transaction left, else the queue's completion."""
        state = self.processor.completed.pop(lease, None)
        return state if state is not None else await self.store.mark_complete(lease)

    async def mark_errored(self, lease: Lease, message: str) -> State:
        """The upload failed (uploads are not retried: this fails it)."""
        self.processor.completed.pop(lease, None)
        return await self.store.mark_errored(lease, message)

    async def mark_failed(self, lease: Lease, message: str) -> State:
        """The upload failed for good."""
        self.processor.completed.pop(lease, None)
        return await self.store.mark_failed(lease, message)

    async def release(self, lease: Lease) -> None:
        """Hand an unfinished upload back."""
        self.processor.completed.pop(lease, None)
        await self.store.release(lease)


def build(context: WorkerContext) -> list[Routine]:
    """One consumer of the uploads queue, one upload at a time (processing is CPU-bound)."""
    processor = UploadProcessor(
        context.db,
        Mirrors.in_data_dir(context.settings.data_dir),
        uploads_dir(context.settings.data_dir),
        clock=context.clock,
    )
    store = CompletingStore(SqlQueueStore(context.db, SPEC, clock=context.clock), processor)
    return [
        ConsumerRoutine(
            NAME, lambda: Consumer(store, processor, holder=NAME, slots=1, poll_wait=5.0)
        )
    ]
