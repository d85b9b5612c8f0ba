"""HTTP routes of batch changes: thin, over BatchService.

Who may call each: any signed-in user submits specs in a namespace they may act in (their own
or an organization of theirs) that may use the batches queue; a spec, its workspaces and apply,
and a batch change (addressed as namespace/name), its logs, retry and close are for whoever may
act in that namespace and site admins; anyone else gets 404. A spec that runs locally is
claimed and kept alive only by the user who submitted it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from offload.batches.queue import NAME as EXECUTION
from offload.batches.service import BatchNotFound, BatchService, BatchStateError, MountError
from offload.batches.spec import SpecErrors
from offload.batches.store import BatchSpecRow
from offload.db.values import parse_time
from offload.dispatch.dispatcher import Dispatcher
from offload.dispatch.grants import NotGranted, QueueGrants
from offload.identity.audit import AuditLog
from offload.identity.authenticator import Authenticator, acting_namespace
from offload.identity.principal import Principal
from offload.protocol.wire import DequeueRequest, HeartbeatRequest, HeartbeatResponse
from offload.secrets.store import UnknownSecret

T = TypeVar("T")

# How long a local run's dequeue waits for a workspace at most, and how often it looks.
LOCAL_MAX_WAIT = 10.0
LOCAL_POLL = 0.5


# A spec's YAML and the files its steps mount: big enough for real specs, small enough that
# one request cannot fill the server's memory.
SPEC_MAX = 1024 * 1024
FILES_MAX = 10_000
FILE_MAX = 16 * 1024 * 1024


# What a path or query names: an id users see, a user's or organization's name, a change's name.
SpecId = Annotated[str, Path(max_length=64)]
NamespaceName = Annotated[str, Path(max_length=64)]
ChangeName = Annotated[str, Path(max_length=255)]


class SubmitSpec(BaseModel):
    """The body of POST /api/batches/specs."""

    model_config = ConfigDict(extra="forbid")

    spec: str = Field(max_length=SPEC_MAX)
    # Whose spec it is: the caller's own namespace by default, or an organization of theirs.
    namespace: str = Field("", max_length=64)
    source: str = Field("<spec>", max_length=4096)
    # The files and directories the steps mount, by path relative to the spec, base64.
    files: dict[str, str] = Field(default_factory=dict, max_length=FILES_MAX)
    # `offload batch preview --local`: the CLI runs the workspaces, not the executors.
    local: bool = False


class Selection(BaseModel):
    """Which spec (default: the applied one) and repository a request is about."""

    model_config = ConfigDict(extra="forbid")

    spec: str | None = Field(None, max_length=64)
    repo: str | None = Field(None, max_length=255)


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


def batches_router(
    service: BatchService,
    dispatcher: Dispatcher,
    grants: QueueGrants,
    auth: Authenticator,
    audit: AuditLog,
) -> APIRouter:
    """/api/batches."""
    router = APIRouter(prefix="/api/batches")

    async def visible_spec(principal: Principal, rand_id: str) -> BatchSpecRow:
        row = await _answer(lambda: service.spec_row(rand_id))
        if not principal.may_act_in(row.user_name):
            raise HTTPException(404, f"no batch spec {rand_id}")
        return row

    def visible_namespace(principal: Principal, namespace: str, name: str) -> None:
        if not principal.may_act_in(namespace):
            raise HTTPException(404, f"{namespace} has no batch change named {name!r}")

    @router.post("/specs", status_code=201, response_model=None)
    async def submit(
        body: SubmitSpec, principal: Principal = Depends(auth.require)
    ) -> dict[str, Any] | JSONResponse:
        namespace = acting_namespace(principal, body.namespace, "batch specs")
        try:
            await grants.require(EXECUTION, namespace)
        except NotGranted as exc:
            raise HTTPException(403, str(exc)) from exc
        if sum(len(data) for data in body.files.values()) > FILE_MAX * 4 // 3:
            raise HTTPException(413, f"the mounted files are larger than {FILE_MAX >> 20} MiB")
        try:
            files = {
                path: base64.b64decode(data, validate=True) for path, data in body.files.items()
            }
        except (ValueError, binascii.Error) as exc:
            raise HTTPException(400, f"files: not base64: {exc}") from exc
        try:
            row = await service.submit(
                namespace,
                body.spec,
                body.source,
                files,
                runs_locally=body.local,
                created_by=principal.username,
            )
        except (MountError, UnknownSecret) as exc:
            raise HTTPException(400, str(exc).strip("'\"")) from exc
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
    async def preview(
        rand_id: SpecId, principal: Principal = Depends(auth.require)
    ) -> dict[str, Any]:
        await visible_spec(principal, rand_id)
        return await _answer(lambda: service.preview(rand_id))

    @router.get("/specs/{rand_id}/workspaces")
    async def workspaces(
        rand_id: SpecId, principal: Principal = Depends(auth.require)
    ) -> list[dict[str, Any]]:
        row = await visible_spec(principal, rand_id)
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

    async def own_local_spec(principal: Principal, rand_id: str) -> BatchSpecRow:
        row = await visible_spec(principal, rand_id)
        if row.created_by != principal.username:
            raise HTTPException(
                403, f"only {row.created_by or 'its submitter'} runs batch spec {rand_id}"
            )
        return row

    # A spec that runs locally is its own small executor queue: the user's CLI dequeues and
    # heartbeats here, then logs and finishes each job through the executor protocol's job
    # calls with the job's token, so its results are stored exactly as an executor's are.
    @router.post("/specs/{rand_id}/dequeue", response_model=None)
    async def dequeue_local(
        rand_id: SpecId, body: DequeueRequest, principal: Principal = Depends(auth.require)
    ) -> Response:
        await own_local_spec(principal, rand_id)
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
    async def heartbeat_local(
        rand_id: SpecId, body: HeartbeatRequest, principal: Principal = Depends(auth.require)
    ) -> dict[str, Any]:
        row = await own_local_spec(principal, rand_id)
        asked = body.ids_by_queue(None).get(EXECUTION, [])
        # Only this spec's own jobs: a heartbeat here must not keep anyone else's alive.
        ids = await service.job_ids_of_spec(row.id, asked)
        beat = (await dispatcher.heartbeat(body.executor_name, {EXECUTION: ids}))[EXECUTION]
        return HeartbeatResponse(
            known_ids=[f"{i}-{EXECUTION}" for i in beat.known_ids],
            cancel_ids=[f"{i}-{EXECUTION}" for i in beat.cancel_ids],
        ).dump()

    @router.post("/specs/{rand_id}/apply")
    async def apply(
        rand_id: SpecId, request: Request, principal: Principal = Depends(auth.require)
    ) -> dict[str, Any]:
        row = await visible_spec(principal, rand_id)
        applied = await _answer(lambda: service.apply(rand_id))
        await audit.by(
            principal, request, "batch.apply", f"{row.user_name}/{row.name}", spec=rand_id
        )
        return applied

    @router.get("/changes/{namespace}/{name}")
    async def status(
        namespace: NamespaceName, name: ChangeName, principal: Principal = Depends(auth.require)
    ) -> dict[str, Any]:
        visible_namespace(principal, namespace, name)
        return await _answer(lambda: service.status(namespace, name))

    @router.get("/changes/{namespace}/{name}/logs")
    async def logs(
        namespace: NamespaceName,
        name: ChangeName,
        principal: Principal = Depends(auth.require),
        spec: Annotated[str | None, Query(max_length=64)] = None,
        repo: Annotated[str | None, Query(max_length=255)] = None,
    ) -> list[dict[str, Any]]:
        visible_namespace(principal, namespace, name)
        return await _answer(lambda: service.logs(namespace, name, spec=spec, repo=repo))

    @router.post("/changes/{namespace}/{name}/retry")
    async def retry(
        namespace: NamespaceName,
        name: ChangeName,
        body: Selection,
        principal: Principal = Depends(auth.require),
    ) -> dict[str, Any]:
        visible_namespace(principal, namespace, name)

        async def call() -> dict[str, Any]:
            n = await service.retry(namespace, name, spec=body.spec, repo=body.repo)
            return {"retried": n}

        return await _answer(call)

    @router.post("/changes/{namespace}/{name}/close")
    async def close(
        namespace: NamespaceName,
        name: ChangeName,
        request: Request,
        principal: Principal = Depends(auth.require),
    ) -> dict[str, Any]:
        visible_namespace(principal, namespace, name)

        async def call() -> dict[str, Any]:
            return {"closing": await service.close(namespace, name)}

        closing = await _answer(call)
        await audit.by(principal, request, "batch.close", f"{namespace}/{name}")
        return closing

    return router
