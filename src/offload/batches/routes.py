"""HTTP routes of batch changes: thin, over BatchService."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from offload.batches.service import BatchNotFound, BatchService, BatchStateError, MountError
from offload.batches.spec import SpecErrors
from offload.db.values import parse_time

T = TypeVar("T")


class SubmitSpec(BaseModel):
    """The body of POST /api/batches/specs."""

    spec: str
    user: str
    source: str = "<spec>"
    # The files and directories the steps mount, by path relative to the spec, base64.
    files: dict[str, str] = Field(default_factory=dict)


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


def batches_router(service: BatchService) -> APIRouter:
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
            row = await service.submit(body.user, body.spec, body.source, files)
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
