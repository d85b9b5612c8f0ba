"""HTTP routes of batch changes: thin, over BatchService."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from offload.batches.queue import NAME as EXECUTION
from offload.batches.service import BatchNotFound, BatchService, BatchStateError, MountError
from offload.batches.spec import SpecErrors
from offload.db.values import parse_time
from offload.dispatch.dispatcher import Dispatcher
from offload.protocol.wire import DequeueRequest, HeartbeatRequest, HeartbeatResponse

T = TypeVar("T")

# How long a local run's dequeue waits for a workspace at most, and how often it looks.
LOCAL_MAX_WAIT = 10.0
LOCAL_POLL = 0.5


class SubmitSpec(BaseModel):
    """The body of POST /api/batches/specs."""

    spec: str
    user: str
    source: str = "<spec>"
    # The files and directories the steps mount, by path relative to the spec, base64.
    files: dict[str, str] = Field(default_factory=dict)
    # `offload batch preview --local`: the CLI runs the workspaces, not the executors.
    local: bool = False


class Selection(BaseModel):
    """Which spec (default: the applied one) and repository a request is about."""

    spec: str | None = None
    repo: str | None = None


async def _answer(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except BatchNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except BatchStateError as exc:
        raise HTTPException(409, str(exc)) from exc


def _iso(value: object) -> str | None:
    moment = parse_time(value)
    return moment.isoformat() if moment else None


def batches_router(service: BatchService, dispatcher: Dispatcher) -> APIRouter:
    """/api/batches."""
    router = APIRouter(prefix="/api/batches")

    @router.post("/specs", status_code=201, response_model=None)
    async def submit(body: SubmitSpec) -> dict[str, Any] | JSONResponse:
        if not body.user.strip():
            raise HTTPException(400, "user is required")
        try:
            files = {
                path: base64.b64decode(data, validate=True) for path, data in body.files.items()
            }
        except (ValueError, binascii.Error) as exc:
            raise HTTPException(400, f"files: not base64: {exc}") from exc
        try:
            row = await service.submit(
                body.user, body.spec, body.source, files, runs_locally=body.local
            )
        except MountError as exc:
            raise HTTPException(400, str(exc)) from exc
        except SpecErrors as exc:
            return JSONResponse(
                {
                    "detail": str(exc),
                    "errors": [
                        {"line": e.line, "column": e.column, "path": e.path, "message": e.message}
                        for e in exc.errors
                    ],
                },
                status_code=400,
            )
        return await service.progress(row.rand_id)

    @router.get("/specs/{rand_id}")
    async def preview(rand_id: str) -> dict[str, Any]:
        return await _answer(lambda: service.preview(rand_id))

    @router.get("/specs/{rand_id}/workspaces")
    async def workspaces(rand_id: str) -> list[dict[str, Any]]:
        async def call() -> list[dict[str, Any]]:
            row = await service.spec_row(rand_id)
            return [
                {
                    "repo": w["repo_name"],
                    "path": w["path"],
                    "branch": w["branch"],
                    "state": w["state"],
                    "cachedSteps": w["cached_steps"],
                    "startedAt": _iso(w["started_at"]),
                    "error": w["failure_message"],
                }
                for w in await service.workspaces(row.id)
            ]

        return await _answer(call)

    # A spec that runs locally is its own small executor queue: the user's CLI dequeues and
    # heartbeats here, then logs and finishes each job through the executor protocol's job
    # calls with the job's token, so its results are stored exactly as an executor's are.
    @router.post("/specs/{rand_id}/dequeue", response_model=None)
    async def dequeue_local(rand_id: str, body: DequeueRequest) -> Response:
        if not body.executor_name:
            raise HTTPException(400, "executorName is required")
        # A long poll, as the protocol's: workspaces appear when resolution ends.
        deadline = time.monotonic() + min(max(body.wait, 0.0), LOCAL_MAX_WAIT)
        while True:
            record = await _answer(lambda: service.claim(rand_id, body.executor_name))
            if record is not None:
                if (leased := await dispatcher.lease(EXECUTION, record)) is not None:
                    return JSONResponse(leased.job.dump())
            elif time.monotonic() >= deadline:
                return Response(status_code=204)
            else:
                await asyncio.sleep(LOCAL_POLL)

    @router.post("/specs/{rand_id}/heartbeat")
    async def heartbeat_local(rand_id: str, body: HeartbeatRequest) -> dict[str, Any]:
        await _answer(lambda: service.spec_row(rand_id))
        ids = body.ids_by_queue(None).get(EXECUTION, [])
        beat = (await dispatcher.heartbeat(body.executor_name, {EXECUTION: ids}))[EXECUTION]
        return HeartbeatResponse(
            known_ids=[f"{i}-{EXECUTION}" for i in beat.known_ids],
            cancel_ids=[f"{i}-{EXECUTION}" for i in beat.cancel_ids],
        ).dump()

    @router.post("/specs/{rand_id}/apply")
    async def apply(rand_id: str) -> dict[str, Any]:
        return await _answer(lambda: service.apply(rand_id))

    @router.get("/changes/{user}/{name}")
    async def status(user: str, name: str) -> dict[str, Any]:
        return await _answer(lambda: service.status(user, name))

    @router.get("/changes/{user}/{name}/logs")
    async def logs(
        user: str, name: str, spec: str | None = None, repo: str | None = None
    ) -> list[dict[str, Any]]:
        return await _answer(lambda: service.logs(user, name, spec=spec, repo=repo))

    @router.post("/changes/{user}/{name}/retry")
    async def retry(user: str, name: str, body: Selection) -> dict[str, Any]:
        async def call() -> dict[str, Any]:
            n = await service.retry(user, name, spec=body.spec, repo=body.repo)
            return {"retried": n}

        return await _answer(call)

    @router.post("/changes/{user}/{name}/close")
    async def close(user: str, name: str) -> dict[str, Any]:
        async def call() -> dict[str, Any]:
            return {"closing": await service.close(user, name)}

        return await _answer(call)

    return router
