"""HTTP routes of generic jobs: thin, over JobService."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from offload.dispatch.secrets import UnknownSecret
from offload.jobs.service import JobRequest, JobRequestError, JobService


class CreateJob(BaseModel):
    """The body of POST /api/jobs."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    repo: str
    command: list[str]
    rev: str = "HEAD"
    image: str = ""
    env: list[str] = Field(default_factory=list)
    secrets: list[str] = Field(default_factory=list)
    allow_network: bool = False
    queue: str = ""


def jobs_router(service: JobService) -> APIRouter:
    """/api/jobs."""
    router = APIRouter(prefix="/api/jobs")

    async def found(job_id: int) -> dict[str, Any]:
        view = await service.view(job_id)
        if view is None:
            raise HTTPException(404, f"no job {job_id}")
        return view.to_json()

    @router.post("", status_code=201)
    async def create(body: CreateJob) -> dict[str, Any]:
        try:
            job_id = await service.create(JobRequest(**body.model_dump()))
        except (JobRequestError, UnknownSecret, ValueError) as exc:
            raise HTTPException(400, str(exc).strip("'\"")) from exc
        return await found(job_id)

    @router.get("")
    async def list_jobs(limit: int = 50) -> list[dict[str, Any]]:
        return [view.to_json() for view in await service.newest(limit)]

    @router.get("/{job_id}")
    async def show(job_id: int) -> dict[str, Any]:
        return await found(job_id)

    @router.get("/{job_id}/logs")
    async def logs(job_id: int) -> list[dict[str, Any]]:
        await found(job_id)
        return [
            {
                "id": e.id,
                "attempt": e.attempt,
                "key": e.key,
                "command": e.command,
                "startTime": e.start_time.isoformat(),
                "exitCode": e.exit_code,
                "durationMs": e.duration_ms,
                "out": e.out,
            }
            for e in await service.logs(job_id)
        ]

    @router.post("/{job_id}/cancel")
    async def cancel(job_id: int) -> dict[str, Any]:
        state = await service.cancel(job_id)
        if state is None:
            view = await found(job_id)
            raise HTTPException(409, f"job {job_id} has already finished ({view['state']})")
        return await found(job_id)

    @router.post("/{job_id}/retry")
    async def retry(job_id: int) -> dict[str, Any]:
        if not await service.retry(job_id):
            view = await found(job_id)
            raise HTTPException(409, f"job {job_id} is {view['state']}; only finished jobs retry")
        return await found(job_id)

    return router
