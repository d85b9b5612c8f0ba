"""Uploaded SCIP indexes processed into documents, symbols' ranges and packages, read back
through the code-navigation store; bad indexes fail with their message and leave no rows.
Both databases, a real mirrored repository, the real queue consumer."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleet import make_repo
from scip_builder import DEF, Doc
from scip_builder import scip_index as build_index

from offload.codeintel.documents import occurrence_at
from offload.codeintel.scip.limits import Limits
from offload.codeintel.store import CodeintelStore, UploadRow
from offload.codeintel.uploads.janitor import Swept, UploadJanitor
from offload.codeintel.uploads.processor import CompletingStore, UploadProcessor
from offload.codeintel.uploads.queue import SPEC
from offload.db.base import Database
from offload.queue.consumer import Consumer
from offload.queue.store import SqlQueueStore
from offload.repos.mirror import Mirrors
from offload.repos.registry import RepoRegistry
from offload.repos.syncer import Syncer

GREET = "scip-python python mypkg 0.1.0 mypkg/util/greet()."
RUN = "scip-python python mypkg 0.1.0 mypkg/main/run()."
GET = "scip-python python requests 2.31.0 requests/get()."


def scip_index(documents: Sequence[Doc]) -> bytes:
    """A SCIP index of these documents, with the external symbol GET."""
    return build_index(documents, external={GET: "Send a GET request."})


INDEX = scip_index(
    [
        (
            "mypkg/util.py",
            [([0, 4, 9], GREET, DEF), ([1, 4, 5], "local 0", DEF), ([5, 0, 5], GREET, 0)],
            {GREET: "Say hello."},
        ),
        (
            "mypkg/main.py",
            [
                ([2, 11, 16], GREET, 0),
                ([3, 0, 3, 5], GREET, 0),
                ([1, 4, 7], RUN, DEF),
                ([4, 0, 12], GET, 0),
            ],
            {},
        ),
        ("gone.py", [([0, 0, 5], GREET, 0)], {}),
        ("mypkg/main.py", [([7, 2, 7], GREET, 0)], {}),
    ]
)


class Site:
    """A mirrored repository, the uploads directory, and the queue the uploads go to."""

    def __init__(self, db: Database, tmp: Path) -> None:
        self.db = db
        self.tmp = tmp
        self.mirrors = Mirrors.in_data_dir(tmp / "data")
        self.directory = tmp / "data" / "uploads"
        self.directory.mkdir(parents=True)
        self.queue = SqlQueueStore(db, SPEC)
        self.store = CodeintelStore(db)
        self.commit = ""

    async def add_repo(self) -> None:
        files = {"mypkg/util.py": "x\n", "mypkg/main.py": "y\n", "README.md": "z\n"}
        self.commit = make_repo(self.tmp / "src", files)
        await Syncer(RepoRegistry(self.db), self.mirrors).add(str(self.tmp / "src"), name="app")

    async def upload(
        self, data: bytes, *, indexer: str = "scip-python", commit: str | None = None
    ) -> int:
        name = f"{hashlib.sha256(data).hexdigest()[:16]}-{random.random():.8f}.scip"
        (self.directory / name).write_bytes(data)
        return await self.queue.enqueue(
            {
                "repo_name": "app",
                "commit_sha": commit or self.commit,
                "root": "",
                "indexer": indexer,
                "file_name": name,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )

    async def process(self, *ids: int, **options: object) -> list[UploadRow]:
        processor = UploadProcessor(self.db, self.mirrors, self.directory, **options)  # type: ignore[arg-type]
        consumer = Consumer(
            CompletingStore(self.queue, processor), processor, holder="test", poll_wait=0.05
        )
        task = asyncio.create_task(consumer.run())
        try:
            for _ in range(600):
                rows = [await self.store.upload(i) for i in ids]
                if all(r is not None and r.state in ("completed", "failed") for r in rows):
                    break
                await asyncio.sleep(0.05)
        finally:
            consumer.stop(5.0)
            await task
        assert consumer.stats.lost == 0
        return [r for r in rows if r is not None]

    async def count(self, table: str, upload_id: int | None = None) -> int:
        where = "" if upload_id is None else f" WHERE upload_id = {int(upload_id)}"
        rows = await self.db.fetch(f"SELECT COUNT(*) AS n FROM {table}{where}")
        return int(rows[0]["n"])


async def test_an_upload_becomes_ranges_per_symbol_and_path(db: Database, tmp_path: Path) -> None:
    site = Site(db, tmp_path)
    await site.add_repo()
    upload_id = await site.upload(INDEX)
    [row] = await site.process(upload_id)

    assert row.state == "completed", row.failure_message
    assert (row.num_documents, row.num_occurrences, row.dropped_paths) == (2, 8, 1)
    assert row.indexer_version == "0.6.0" and row.stored_bytes and row.stored_bytes > 0
    assert [u.id for u in await site.store.upload_for("app", site.commit)] == [upload_id]
    greet = await site.store.symbol_ranges([upload_id], GREET)
    assert [(r.path, r.definitions, r.references) for r in greet] == [
        ("mypkg/main.py", (), ((2, 11, 2, 16), (3, 0, 3, 5), (7, 2, 7, 7))),
        ("mypkg/util.py", ((0, 4, 0, 9),), ((5, 0, 5, 5),)),
    ]
    assert await site.store.symbol_ranges([upload_id], "local 0") == []
    util = await site.store.document(upload_id, "mypkg/util.py")
    assert util is not None and util.hover == {GREET: ("Say hello.",)}
    inner = occurrence_at(util, 1, 4)
    assert inner is not None and inner.symbol == "local 0"
    main = await site.store.document(upload_id, "mypkg/main.py")
    assert main is not None
    found = occurrence_at(main, 2, 13)
    assert found is not None and found.symbol == GREET
    assert occurrence_at(main, 2, 16) is None
    assert await site.store.document(upload_id, "gone.py") is None
    assert await site.store.packages(upload_id) == [
        ("scip-python", "python", "mypkg", "0.1.0", True),
        ("scip-python", "python", "requests", "2.31.0", False),
    ]
    assert await site.store.packages_defining("scip-python", "python", "mypkg", "0.1.0") == [
        upload_id
    ]
    assert await site.store.packages_defining("scip-python", "python", "requests", "2.31.0") == []
    assert not any(site.directory.iterdir())  # the file is gone once processed


async def test_documents_are_shared_and_a_new_upload_replaces_the_old(
    db: Database, tmp_path: Path
) -> None:
    site = Site(db, tmp_path)
    await site.add_repo()
    first = await site.upload(INDEX)
    other = await site.upload(INDEX, indexer="scip-python-nightly")
    rows = await site.process(first, other)
    assert [r.state for r in rows] == ["completed", "completed"]
    assert await site.count("codeintel_documents") == 2
    assert await site.count("codeintel_upload_documents") == 4

    again = await site.upload(INDEX)
    [row] = await site.process(again)
    assert row.state == "completed"
    at_commit = await site.store.upload_for("app", site.commit)
    assert sorted(u.id for u in at_commit) == [other, again]
    assert await site.store.upload(first) is None
    for table in ("codeintel_upload_documents", "codeintel_symbol_ranges", "codeintel_packages"):
        assert await site.count(table, first) == 0
    assert await site.count("codeintel_documents") == 2
    assert [u.id for u in await site.store.uploads(repo="app", limit=1)] == [again]
    page = await site.store.uploads(repo="app", limit=1, after_id=again)
    assert [u.id for u in page] == [other]


async def test_bad_indexes_fail_with_their_message_and_leave_no_rows(
    db: Database, tmp_path: Path
) -> None:
    site = Site(db, tmp_path)
    await site.add_repo()
    corrupt = await site.upload(random.Random(7).randbytes(4096))
    truncated = await site.upload(INDEX[: len(INDEX) // 2 + 40])
    unknown = await site.upload(INDEX, commit="1" * 40)
    rows = await site.process(corrupt, truncated, unknown, batch_documents=1)
    assert [r.state for r in rows] == ["failed"] * 3
    messages = [r.failure_message or "" for r in rows]
    assert "cannot be read" in messages[0] and "byte" in messages[0], messages[0]
    assert "truncated" in messages[1] and "byte" in messages[1], messages[1]
    assert f"commit {'1' * 40} of app" in messages[2], messages[2]

    oversized = await site.upload(INDEX)
    [row] = await site.process(oversized, limits=Limits(index_bytes=100))
    assert row.state == "failed" and "MAX_INDEX_BYTES" in (row.failure_message or "")

    for table in (
        "codeintel_documents",
        "codeintel_upload_documents",
        "codeintel_symbol_ranges",
        "codeintel_packages",
    ):
        assert await site.count(table) == 0, table
    assert not any(site.directory.iterdir())


async def test_the_janitor_ends_expired_uploads_but_the_newest_of_each_project(
    db: Database, tmp_path: Path
) -> None:
    site = Site(db, tmp_path)
    await site.add_repo()
    older = await site.upload(INDEX)
    await site.process(older)
    # As if `older` were of the commit before: the next upload does not replace it.
    await db.fetch(
        "UPDATE codeintel_uploads SET commit_sha = :c WHERE id = :id", {"c": "2" * 40, "id": older}
    )
    newer = await site.upload(INDEX)
    nightly = await site.upload(INDEX, indexer="scip-python-nightly")
    failed = await site.upload(b"\xff" * 64)
    await site.process(newer, nightly, failed)
    long_ago = datetime.now(UTC) - timedelta(days=40)
    await db.fetch("UPDATE codeintel_uploads SET finished_at = :t", {"t": long_ago})
    waiting = await site.upload(INDEX)
    waiting_file = (
        await db.fetch("SELECT file_name FROM codeintel_uploads WHERE id = :id", {"id": waiting})
    )[0]["file_name"]
    stray = site.directory / "left-behind.scip"
    stray.write_bytes(b"x")
    for path in site.directory.iterdir():
        os.utime(path, (long_ago.timestamp(), long_ago.timestamp()))

    janitor = UploadJanitor(db, site.directory, timedelta(days=30))
    assert await janitor.sweep() == Swept(uploads=2, documents=0, files=1)
    left = sorted(u.id for u in await site.store.uploads(limit=10))
    assert left == [newer, nightly, waiting]
    assert not stray.exists() and (site.directory / waiting_file).exists()
    assert await site.count("codeintel_upload_documents", older) == 0
    assert await site.count("codeintel_documents") == 2  # still held by the newer uploads

    await db.fetch("DELETE FROM codeintel_upload_documents")
    assert (await janitor.sweep()).documents == 2
