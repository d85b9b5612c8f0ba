"""Index uploads from executors: what a hostile job or caller can make the executor read and
the server keep. The executor reads only regular files inside the job's workspace; the server
keeps a body only from the job's holder, within its size limit and with the checksum it was
announced with, and leaves no file behind when it refuses one."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from app_server import serve

from offload.codeintel.queue import SPEC as INDEX_JOBS
from offload.config import Settings
from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.dispatch.access import executor_token
from offload.executor import uploads
from offload.executor.client import ExecutorClient
from offload.protocol import routes
from offload.protocol.wire import JobUpload
from offload.queue.record import Lease, NotOwned
from offload.queue.store import SqlQueueStore

LIMIT = 64 * 1024


COMMIT = "a" * 40


@pytest.fixture
async def site(
    db: Database, db_url: DatabaseURL, tmp_path: Path
) -> AsyncIterator[tuple[str, Path]]:
    data = tmp_path / "data"
    settings = Settings(data_dir=data, database_url=db_url.raw, codeintel_upload_limit=LIMIT)
    async with serve(db, settings) as url:
        yield url, data


async def held_job(db: Database, url: str, name: str = "exec-1") -> tuple[ExecutorClient, Lease]:
    """An index job queued and dequeued by executor `name`: its client and lease."""
    await SqlQueueStore(db, INDEX_JOBS).enqueue(
        {
            "repo_name": "acme/api",
            "commit_sha": COMMIT,
            "root": "web",
            "indexer": "scip-typescript",
            "job": {"indexer": "sourcegraph/scip-typescript", "root": "web"},
            "source": "inferred",
        }
    )
    client = ExecutorClient(
        url, await executor_token(db), ["codeintel"], name=name, runtime="shell"
    )
    (record,) = await client.dequeue(name)
    return client, record.lease


def file_with(tmp_path: Path, data: bytes) -> tuple[int, uploads.Digest]:
    path = tmp_path / "index.scip"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    return fd, uploads.digest(fd)


def left_in(data: Path) -> list[str]:
    where = data / "uploads"
    return sorted(p.name for p in where.iterdir()) if where.exists() else []


async def test_an_upload_is_kept_as_the_jobs_with_its_size_and_checksum(
    db: Database, site: tuple[str, Path], tmp_path: Path
) -> None:
    url, data = site
    client, lease = await held_job(db, url)
    body = b"\x0a\x03abc" * 100
    fd, digest = file_with(tmp_path, body)
    try:
        answer = await client.upload(lease, fd, digest)
        (row,) = await db.fetch("SELECT * FROM codeintel_uploads")
        assert answer["id"] == row["id"]
        # Where the index belongs is the job's, never the caller's to say.
        assert (row["repo_name"], row["commit_sha"], row["root"], row["indexer"]) == (
            "acme/api",
            COMMIT,
            "web",
            "scip-typescript",
        )
        assert (row["state"], int(row["size"]), row["sha256"]) == (
            "queued",
            len(body),
            hashlib.sha256(body).hexdigest(),
        )
        assert (data / "uploads" / row["file_name"]).read_bytes() == body
        (job,) = await db.fetch("SELECT upload_id FROM codeintel_index_jobs")
        assert job["upload_id"] == row["id"]
        # One upload per job: a second is refused, and nothing more is kept.
        with pytest.raises(uploads.UploadRefused, match="already sent its upload"):
            await client.upload(lease, fd, digest)
        assert left_in(data) == [row["file_name"]]
    finally:
        os.close(fd)
        await client.close()


async def test_a_body_that_differs_from_its_checksum_or_passes_the_limit_leaves_nothing(
    db: Database, site: tuple[str, Path], tmp_path: Path
) -> None:
    url, data = site
    client, lease = await held_job(db, url)
    held = client.held(lease)
    headers = {
        "Authorization": f"Bearer {held.token}",
        routes.JOB_ID_HEADER: str(held.job_id),
        routes.EXECUTOR_NAME_HEADER: "exec-1",
    }
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            damaged = await http.post(
                routes.UPLOADS,
                content=b"index bytes",
                headers={**headers, routes.UPLOAD_SHA256_HEADER: "0" * 64},
            )
            assert damaged.status_code == 400
            assert "damaged on the way" in damaged.json()["detail"]
            unannounced = await http.post(routes.UPLOADS, content=b"x", headers=headers)
            assert unannounced.status_code == 400
            assert routes.UPLOAD_SHA256_HEADER in unannounced.json()["detail"]
            big = b"\0" * (LIMIT + 1)
            announced = {**headers, routes.UPLOAD_SHA256_HEADER: hashlib.sha256(big).hexdigest()}
            declared = await http.post(routes.UPLOADS, content=big, headers=announced)
            assert declared.status_code == 413
            assert "OFFLOAD_CODEINTEL_UPLOAD_LIMIT" in declared.text

            async def stream() -> AsyncIterator[bytes]:
                for _ in range(LIMIT // 1024 + 2):
                    yield b"\0" * 1024

            # Sent in chunks without a length: counted as it arrives, refused past the limit.
            chunked = await http.post(routes.UPLOADS, content=stream(), headers=announced)
            assert chunked.status_code == 413
        assert left_in(data) == []
        assert await db.fetch("SELECT id FROM codeintel_uploads") == []
        # The job may still send a good one.
        fd, digest = file_with(tmp_path, b"a real index")
        try:
            assert (await client.upload(lease, fd, digest))["size"] == len(b"a real index")
        finally:
            os.close(fd)
    finally:
        await client.close()


async def test_only_the_holder_with_its_job_token_may_upload(
    db: Database, site: tuple[str, Path], tmp_path: Path
) -> None:
    url, data = site
    client, lease = await held_job(db, url)
    other, other_lease = await held_job(db, url, name="exec-2")
    held = client.held(lease)
    body = b"index"
    sha = hashlib.sha256(body).hexdigest()
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            shared = await http.post(
                routes.UPLOADS,
                content=body,
                headers={
                    "Authorization": f"token-executor {await executor_token(db)}",
                    routes.UPLOAD_SHA256_HEADER: sha,
                },
            )
            assert shared.status_code == 403
            # Job 1's token presented as executor 2's, or for job 2: the protocol's 404.
            for job_id, name in (
                (held.job_id, "exec-2"),
                (other.held(other_lease).job_id, "exec-1"),
            ):
                stolen = await http.post(
                    routes.UPLOADS,
                    content=body,
                    headers={
                        "Authorization": f"Bearer {held.token}",
                        routes.JOB_ID_HEADER: str(job_id),
                        routes.EXECUTOR_NAME_HEADER: name,
                        routes.UPLOAD_SHA256_HEADER: sha,
                    },
                )
                assert stolen.status_code == 404, stolen.text
            nobody = await http.post(
                routes.UPLOADS,
                content=body,
                headers={"Authorization": "Bearer nope", routes.UPLOAD_SHA256_HEADER: sha},
            )
            assert nobody.status_code == 401
        # A job that ended has no token left: its executor learns it lost the job.
        await client.mark_complete(lease)
        fd, digest = file_with(tmp_path, body)
        try:
            client._held[lease.id] = held  # what a zombie executor would still send
            with pytest.raises(NotOwned):
                await client.upload(lease, fd, digest)
        finally:
            os.close(fd)
        assert left_in(data) == []
    finally:
        await client.close()
        await other.close()


@contextlib.contextmanager
def opened(root: Path, path: str) -> Iterator[int]:
    with uploads.open_within(root, JobUpload(path=path)) as fd:
        yield fd


def test_the_executor_reads_only_regular_files_inside_the_workspace(tmp_path: Path) -> None:
    root = tmp_path / "workspace"
    (root / "repository" / "web").mkdir(parents=True)
    (root / "repository" / "web" / "index.scip").write_bytes(b"index")
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    with opened(root, "repository/web/index.scip") as fd:
        assert os.pread(fd, 100, 0) == b"index"
    # What a step can leave in the workspace instead of an index.
    (root / "repository" / "link.scip").symlink_to(secret)
    (root / "repository" / "dir-link").symlink_to(tmp_path)
    os.mkfifo(root / "repository" / "fifo.scip")
    (root / "repository" / "dir.scip").mkdir()
    open_before = len(os.listdir("/proc/self/fd"))
    refused = {
        "repository/link.scip": "symlink",
        "repository/dir-link/secret": "symlink",
        "repository/fifo.scip": "not a regular file",
        "repository/dir.scip": "not a regular file",
        "repository/missing.scip": "left no file",
        "../secret": "without `..`",
        "repository/../../secret": "without `..`",
        str(secret): "relative to the workspace",
    }
    for path, why in refused.items():
        with pytest.raises(uploads.UploadRefused, match=why), opened(root, path):
            raise AssertionError(f"{path} was opened")
    # Nothing was left open: the executor runs for months.
    assert len(os.listdir("/proc/self/fd")) == open_before


async def test_an_index_job_reported_done_without_its_index_fails_saying_why(
    db: Database, site: tuple[str, Path]
) -> None:
    url, _ = site
    client, lease = await held_job(db, url)
    try:
        await client.mark_complete(lease)
    finally:
        await client.close()
    (row,) = await db.fetch("SELECT state, failure_message FROM codeintel_index_jobs")
    assert row["state"] == "failed"
    assert "reported success but sent no index" in row["failure_message"]
