"""Who may call the executor routes: the shared executor token, or a job's own token."""

from __future__ import annotations

import time

from fastapi import HTTPException, Request

from offload.db.base import Database
from offload.dispatch.access import executor_token, same_token
from offload.dispatch.tokens import Grant, JobTokens
from offload.protocol import routes

# The token is read from the database at most this often, so a rotated one takes effect soon.
TOKEN_TTL = 10.0


class ExecutorAuth:
    """Checks `Authorization` headers on executor routes."""

    def __init__(self, db: Database, tokens: JobTokens) -> None:
        self.db = db
        self.tokens = tokens
        self._token: tuple[str, float] | None = None

    async def shared_token(self) -> str:
        """The current executor token (cached briefly)."""
        if self._token is None or time.monotonic() - self._token[1] > TOKEN_TTL:
            self._token = (await executor_token(self.db), time.monotonic())
        return self._token[0]

    def forget(self) -> None:
        """Read the token again on the next call: it was just replaced in this process."""
        self._token = None

    async def require_executor(self, request: Request) -> None:
        """The caller holds the shared executor token; 401 otherwise."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "token-executor" or not value:
            raise HTTPException(401, "missing `Authorization: token-executor <token>` header")
        if not same_token(value.strip(), await self.shared_token()):
            raise HTTPException(401, "invalid executor token")

    async def require_job(
        self, request: Request, *, queue: str | None = None, repo: str | None = None
    ) -> Grant | None:
        """A valid job token scoped to this job (and queue or repository); None means the
        caller used the shared executor token instead, which may act on any job it holds."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "token-executor":
            await self.require_executor(request)
            return None
        if scheme.lower() != "bearer" or not value:
            raise HTTPException(401, "missing `Authorization: Bearer <job token>` header")
        grant = await self.tokens.lookup(value.strip())
        if grant is None:
            raise HTTPException(401, "invalid job token (unknown, or its job has ended)")
        job_id = request.headers.get(routes.JOB_ID_HEADER) or request.headers.get(
            routes.JOB_ID_HEADER_COMPAT
        )
        executor = request.headers.get(routes.EXECUTOR_NAME_HEADER) or request.headers.get(
            routes.EXECUTOR_NAME_HEADER_COMPAT
        )
        if not job_id or not executor:
            raise HTTPException(
                400,
                f"job calls need the {routes.JOB_ID_HEADER} and "
                f"{routes.EXECUTOR_NAME_HEADER} headers",
            )
        # 404, the executor protocol's "unknown job", for anyone but the holder: a token
        # reveals nothing about jobs, queues or repositories other than its own.
        if job_id != str(grant.job_id) or executor != grant.holder:
            raise HTTPException(404, f"job {job_id[:40]} is not held by {executor[:255]}")
        if queue is not None and grant.queue != queue:
            raise HTTPException(404, f"job {job_id} is not a job of queue {queue}")
        if repo is not None and grant.repo != repo:
            raise HTTPException(404, f"job {job_id} has no repository {repo}")
        return grant
