"""HTTP routes of generic jobs: thin, over JobService.

Who may call each: any signed-in user creates jobs in a namespace they may act in (their own,
or an organization of theirs) on queues granted to it; a job, its logs, cancel and retry are
for whoever may act in the job's namespace and for site admins; anyone else gets 404, so ids
tell nothing. Listing shows only the caller's namespaces (site admins: every job).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from offload.api.errors import BODY, ErrorBody, documented
from offload.api.inputs import BeforeQuery, IdPath, PlainName, Text
from offload.dispatch.grants import NotGranted
from offload.identity.audit import AuditLog
from offload.identity.authenticator import Authenticator, acting_namespace
from offload.identity.principal import Principal
from offload.jobs.service import JobRequest, JobRequestError, JobService, JobView
from offload.jobs.submissions import KEY_TTL, KeyInFlight, KeyReused
from offload.secrets.store import UnknownSecret

LIMIT_MAX = 500

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description=(
            "Makes a retried submission safe: the same key sent again by the same user, with "
            "the same body, returns the job the first request made (200) instead of making "
            f"another. 1 to 255 visible ASCII characters; kept {KEY_TTL.total_seconds() / 3600:g}"
            " hours. Reused with a different body: 422; while the first request runs: 409."
        ),
    ),
]


class CreateJob(BaseModel):
    """The body of POST /api/jobs."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    repo: PlainName = Field(max_length=255)
    command: list[Text] = Field(max_length=1000)
    rev: PlainName = Field("HEAD", max_length=255)
    image: PlainName = Field("", max_length=512)
    env: list[Text] = Field(default_factory=list, max_length=200)
    secrets: list[PlainName] = Field(default_factory=list, max_length=100)
    allow_network: bool = False
    queue: PlainName = Field("", max_length=64)
    # Default: the caller's own namespace.
    namespace: PlainName = Field("", max_length=64)


def jobs_router(service: JobService, auth: Authenticator, audit: AuditLog) -> APIRouter:
    """/api/jobs."""
    router = APIRouter(prefix="/api/jobs", responses=documented(401))

    async def found(principal: Principal, job_id: int) -> JobView:
        view = await service.view(job_id)
        if view is None or not principal.may_act_in(view.namespace):
            raise HTTPException(404, f"no job {job_id}")
        return view

    @router.post(
        "",
        status_code=201,
        responses={
            200: {
                "description": "A retry (same Idempotency-Key): the job the first one made.",
                "headers": {
                    "Idempotent-Replayed": {
                        "description": "`true`: this answers an earlier request",
                        "schema": {"type": "string"},
                    }
                },
            },
            **documented(*BODY, 403),
            409: {
                "model": ErrorBody,
                "description": "The first request with this Idempotency-Key still runs.",
            },
        },
    )
    async def create(
        body: CreateJob,
        response: Response,
        principal: Principal = Depends(auth.require),
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        if sum(len(part) for part in body.command) > 256 * 1024:
            raise HTTPException(400, "the command is longer than 256 KiB")
        namespace = acting_namespace(principal, body.namespace, "jobs")
        fields = body.model_dump(exclude={"namespace"})
        request = JobRequest(**fields, namespace=namespace, submitted_by=principal.username)
        try:
            if idempotency_key is None:
                job_id = await service.create(request)
            else:
                job_id, made = await service.create_once(request, idempotency_key)
                if not made:
                    response.status_code = 200
                    response.headers["Idempotent-Replayed"] = "true"
        except NotGranted as exc:
            raise HTTPException(403, str(exc)) from exc
        except KeyReused as exc:
            raise HTTPException(422, str(exc)) from exc
        except KeyInFlight as exc:
            raise HTTPException(409, str(exc)) from exc
        except (JobRequestError, UnknownSecret, ValueError) as exc:
            raise HTTPException(400, str(exc).strip("'\"")) from exc
        return (await found(principal, job_id)).to_json()

    @router.get("", responses=documented(422))
    async def list_jobs(
        principal: Principal = Depends(auth.require),
        limit: Annotated[int, Query(ge=1, le=LIMIT_MAX)] = 50,
        before: BeforeQuery = None,
    ) -> list[dict[str, Any]]:
        scope = None if principal.site_admin else principal.namespaces()
        return [v.to_json() for v in await service.newest(scope, limit=limit, before=before)]

    @router.get("/{job_id}", responses=documented(404, 422))
    async def show(job_id: IdPath, principal: Principal = Depends(auth.require)) -> dict[str, Any]:
        return (await found(principal, job_id)).to_json()

    @router.get("/{job_id}/logs", responses=documented(404, 422))
    async def logs(
        job_id: IdPath, principal: Principal = Depends(auth.require)
    ) -> list[dict[str, Any]]:
        await found(principal, job_id)
        return [e.to_json() for e in await service.logs(job_id)]

    @router.post("/{job_id}/cancel", responses=documented(403, 404, 409, 422))
    async def cancel(
        job_id: IdPath, request: Request, principal: Principal = Depends(auth.require)
    ) -> dict[str, Any]:
        view = await found(principal, job_id)
        state = await service.cancel(job_id)
        if state is None:
            raise HTTPException(409, f"job {job_id} has already finished ({view.state.value})")
        await audit.by(principal, request, "job.cancel", f"job {job_id}")
        return (await found(principal, job_id)).to_json()

    @router.post("/{job_id}/retry", responses=documented(403, 404, 409, 422))
    async def retry(job_id: IdPath, principal: Principal = Depends(auth.require)) -> dict[str, Any]:
        view = await found(principal, job_id)
        if not await service.retry(job_id):
            raise HTTPException(
                409, f"job {job_id} is {view.state.value}; only finished jobs retry"
            )
        return (await found(principal, job_id)).to_json()

    return router
