"""HTTP routes of generic jobs: thin, over JobService.

Who may call each: any signed-in user creates jobs in a namespace they may act in (their own,
or an organization of theirs) on queues granted to it; a job, its logs, cancel and retry are
for whoever may act in the job's namespace and for site admins; anyone else gets 404, so ids
tell nothing. Listing shows only the caller's namespaces (site admins: every job).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from offload.dispatch.grants import NotGranted
from offload.identity.audit import AuditLog
from offload.identity.authenticator import Authenticator, acting_namespace
from offload.identity.principal import Principal
from offload.jobs.service import JobRequest, JobRequestError, JobService, JobView
from offload.secrets.store import UnknownSecret

LIMIT_MAX = 500


class CreateJob(BaseModel):
    """The body of POST /api/jobs."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    repo: str = Field(max_length=255)
    command: list[str] = Field(max_length=1000)
    rev: str = Field("HEAD", max_length=255)
    image: str = Field("", max_length=512)
    env: list[str] = Field(default_factory=list, max_length=200)
    secrets: list[str] = Field(default_factory=list, max_length=100)
    allow_network: bool = False
    queue: str = Field("", max_length=64)
    # Default: the caller's own namespace.
    namespace: str = Field("", max_length=64)


def jobs_router(service: JobService, auth: Authenticator, audit: AuditLog) -> APIRouter:
    """/api/jobs."""
    router = APIRouter(prefix="/api/jobs")

    async def found(principal: Principal, job_id: int) -> JobView:
        view = await service.view(job_id)
        if view is None or not principal.may_act_in(view.namespace):
            raise HTTPException(404, f"no job {job_id}")
        return view

    @router.post("", status_code=201)
    async def create(
        body: CreateJob, principal: Principal = Depends(auth.require)
    ) -> dict[str, Any]:
        if sum(len(part) for part in body.command) > 256 * 1024:
            raise HTTPException(400, "the command is longer than 256 KiB")
        namespace = acting_namespace(principal, body.namespace, "jobs")
        fields = body.model_dump(exclude={"namespace"})
        request = JobRequest(**fields, namespace=namespace, submitted_by=principal.username)
        try:
            job_id = await service.create(request)
        except NotGranted as exc:
            raise HTTPException(403, str(exc)) from exc
        except (JobRequestError, UnknownSecret, ValueError) as exc:
            raise HTTPException(400, str(exc).strip("'\"")) from exc
        return (await found(principal, job_id)).to_json()

    @router.get("")
    async def list_jobs(
        principal: Principal = Depends(auth.require),
        limit: Annotated[int, Query(ge=1, le=LIMIT_MAX)] = 50,
        before: int | None = None,
    ) -> list[dict[str, Any]]:
        scope = None if principal.site_admin else principal.namespaces()
        return [v.to_json() for v in await service.newest(scope, limit=limit, before=before)]

    @router.get("/{job_id}")
    async def show(job_id: int, principal: Principal = Depends(auth.require)) -> dict[str, Any]:
        return (await found(principal, job_id)).to_json()

    @router.get("/{job_id}/logs")
    async def logs(
        job_id: int, principal: Principal = Depends(auth.require)
    ) -> list[dict[str, Any]]:
        await found(principal, job_id)
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
    async def cancel(
        job_id: int, request: Request, principal: Principal = Depends(auth.require)
    ) -> dict[str, Any]:
        view = await found(principal, job_id)
        state = await service.cancel(job_id)
        if state is None:
            raise HTTPException(409, f"job {job_id} has already finished ({view.state.value})")
        await audit.by(principal, request, "job.cancel", f"job {job_id}")
        return (await found(principal, job_id)).to_json()

    @router.post("/{job_id}/retry")
    async def retry(job_id: int, principal: Principal = Depends(auth.require)) -> dict[str, Any]:
        view = await found(principal, job_id)
        if not await service.retry(job_id):
            raise HTTPException(
                409, f"job {job_id} is {view.state.value}; only finished jobs retry"
            )
        return (await found(principal, job_id)).to_json()

    return router
