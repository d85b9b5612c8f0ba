"""`POST /.executors/uploads`: an index job's index, sent by the executor that holds the job.

Who may call it: an executor, with the job token of a `codeintel` job it holds (the token is
scoped to that job; the shared executor token is refused, since an upload belongs to a job).
The body is streamed to `<data_dir>/uploads/` under a name the server picks, counted against
OFFLOAD_CODEINTEL_UPLOAD_LIMIT (api/bodylimit.py refuses a larger declared length before
this runs) and hashed; it is kept only when its sha256 is the one the executor announced.
The repository, commit, root and indexer of the upload are the job's, never the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from offload.api.errors import documented
from offload.clock import Clock, SystemClock
from offload.codeintel.queue import SPEC as INDEX_JOBS
from offload.codeintel.uploads.queue import SPEC as UPLOADS
from offload.db.base import Database
from offload.dispatch.tokens import Grant
from offload.protocol import routes

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# The caller's job grant, or None when it used the shared executor token.
Authorize = Callable[[Request], Awaitable[Grant | None]]

_INSERT = f"""
INSERT INTO {UPLOADS.table} (state, queued_at, repo_name, commit_sha, root, indexer,
    index_job_id, file_name, size, sha256, uploaded_by)
VALUES ('queued', :now, :repo, :commit, :root, :indexer, :job, :file, :size, :sha256, :by)
RETURNING id
"""
_LINK = f"""
UPDATE {INDEX_JOBS.table} SET upload_id = :upload
WHERE id = :job AND upload_id IS NULL AND state = 'processing'
RETURNING id
"""


def uploads_dir(data_dir: Path) -> Path:
    """Where uploaded indexes wait for processing."""
    return data_dir / "uploads"


def uploads_router(
    db: Database, authorize: Authorize, data_dir: Path, *, clock: Clock | None = None
) -> APIRouter:
    """The upload route executors call."""
    router = APIRouter()
    now = (clock or SystemClock()).now
    where = uploads_dir(data_dir)

    @router.post(
        routes.UPLOADS,
        status_code=201,
        responses=documented(400, 401, 403, 404, 409, 413, protocol=True),
    )
    async def upload(request: Request) -> JSONResponse:
        grant = await authorize(request)
        if grant is None:
            raise HTTPException(403, "an upload is sent with its job's token, not the executor's")
        announced = request.headers.get(routes.UPLOAD_SHA256_HEADER, "").lower()
        if not _SHA256.match(announced):
            raise HTTPException(
                400, f"the {routes.UPLOAD_SHA256_HEADER} header must be the body's sha256 in hex"
            )
        rows = await db.fetch(
            f"SELECT repo_name, commit_sha, root, indexer, upload_id FROM {INDEX_JOBS.table}"
            " WHERE id = :id",
            {"id": grant.job_id},
        )
        if not rows:
            raise HTTPException(404, f"job {grant.job_id} is not an index job")
        job = rows[0]
        if job["upload_id"] is not None:
            raise HTTPException(409, f"index job {grant.job_id} already sent its upload")
        where.mkdir(parents=True, exist_ok=True)
        name = f"{grant.job_id}-{secrets.token_hex(8)}.scip"
        path = where / name
        try:
            size, digest = await _receive(request, path)
            if digest != announced:
                raise HTTPException(
                    400,
                    f"the upload's sha256 is {digest}, not {announced} as announced; "
                    "it was damaged on the way",
                )
            upload_id = await _record(db, grant, dict(job), name, size, digest, now())
        except BaseException:
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        await db.notify(UPLOADS.name)
        return JSONResponse({"id": upload_id, "size": size, "sha256": digest}, status_code=201)

    return router


async def _receive(request: Request, path: Path) -> tuple[int, str]:
    """Stream the body to `path` (a new file); its size and sha256."""
    sha = hashlib.sha256()
    size = 0
    handle: IO[bytes] = await asyncio.to_thread(path.open, "xb")
    try:
        async for chunk in request.stream():
            if chunk:
                sha.update(chunk)
                size += len(chunk)
                await asyncio.to_thread(handle.write, chunk)
    finally:
        await asyncio.to_thread(handle.close)
    if size == 0:
        raise HTTPException(400, "the upload is empty")
    return size, sha.hexdigest()


async def _record(
    db: Database, grant: Grant, job: dict[str, Any], name: str, size: int, digest: str, at: Any
) -> int:
    """The upload's row, queued for processing and linked to its job, in one transaction."""
    async with db.transaction() as tx:
        rows = await tx.fetch(
            _INSERT,
            {
                "now": at,
                "repo": job["repo_name"],
                "commit": job["commit_sha"],
                "root": job["root"],
                "indexer": job["indexer"],
                "job": grant.job_id,
                "file": name,
                "size": size,
                "sha256": digest,
                "by": grant.holder,
            },
        )
        upload_id = int(rows[0]["id"])
        if not await tx.fetch(_LINK, {"upload": upload_id, "job": grant.job_id}):
            raise HTTPException(409, f"index job {grant.job_id} already sent its upload")
    return upload_id
