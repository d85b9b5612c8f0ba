"""HTTP routes of batch changes: thin, over BatchService.

Who may call each: any signed-in user submits specs in a namespace they may act in (their own
or an organization of theirs) that may use the batches queue; a spec, its workspaces, its
changesets (with their diffs) and apply, and a batch change (addressed as namespace/name), its
logs, retry and close are for whoever may act in that namespace and site admins; anyone else
gets 404. A spec that runs locally is
claimed and kept alive only by the user who submitted it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect

from offload.api.errors import BODY, ErrorBody, documented, problems
from offload.api.inputs import PRINTABLE, AfterQuery, LongNameQuery, PlainName
from offload.batches.queue import NAME as EXECUTION
from offload.batches.service import BatchNotFound, BatchService, BatchStateError, MountError
from offload.batches.spec.limits import SpecLimitExceeded
from offload.batches.spec.model import SpecErrors
from offload.batches.spec.submission import SubmissionError, SubmitSpec
from offload.batches.spec.workers import WorkersBusy
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


# The submission's body as documented: FastAPI does not read it (the route does, off the loop).
SUBMISSION = {
    "required": True,
    "content": {"application/json": {"schema": SubmitSpec.model_json_schema()}},
}
BUSY = {"model": ErrorBody, "description": "Too many specs are being read; retry after a moment"}

# What a path or query names: an id users see, a user's or organization's name, a change's name.
SpecId = Annotated[str, Path(max_length=64, pattern=PRINTABLE)]
NamespaceName = Annotated[str, Path(max_length=64, pattern=PRINTABLE)]
ChangeName = Annotated[str, Path(max_length=255, pattern=PRINTABLE)]
# The words of service.workspace_state().
WorkspaceState = Literal[
    "pending",
    "queued",
    "processing",
    "completed",
    "errored",
    "failed",
    "canceled",
    "cached",
    "ignored",
    "skipped",
]
# Changeset specs per page: each carries its whole diff.
CHANGESETS_MAX = 1000


class Selection(BaseModel):
    """Which spec (default: the applied one) and repository a request is about."""

    model_config = ConfigDict(extra="forbid")

    spec: PlainName | None = Field(None, max_length=64)
    repo: PlainName | None = Field(None, max_length=255)


async def _answer(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except BatchNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except BatchStateError as exc:
        raise HTTPException(409, str(exc)) from exc


def _spec_errors(exc: SpecErrors) -> JSONResponse:
    """A spec's problems with their places: 400, or the status of the limit it is over."""
    return JSONResponse(
        {
            "detail": str(exc),
            "errors": [
                {"line": e.line, "column": e.column, "path": e.path, "message": e.message}
                for e in exc.errors
            ],
        },
        status_code=exc.status if isinstance(exc, SpecLimitExceeded) else 400,
    )


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
    router = APIRouter(prefix="/api/batches", responses=documented(401))

    async def visible_spec(principal: Principal, rand_id: str) -> BatchSpecRow:
        row = await _answer(lambda: service.spec_row(rand_id))
        if not principal.may_act_in(row.user_name):
            raise HTTPException(404, f"no batch spec {rand_id}")
        return row

    def visible_namespace(principal: Principal, namespace: str, name: str) -> None:
        if not principal.may_act_in(namespace):
            raise HTTPException(404, f"{namespace} has no batch change named {name!r}")

    # 400 also for a spec that is not valid, with each error's line and column in `errors`;
    # 413 or 422 for one over a limit of spec/limits.py, the same way.
    @router.post(
        "/specs",
        status_code=201,
        response_model=None,
        responses={**documented(*BODY, 403), 503: BUSY},
        # The body is read and parsed in a spec worker, off the event loop (spec/submission.py).
        openapi_extra={"requestBody": SUBMISSION},
    )
    async def submit(
        request: Request, principal: Principal = Depends(auth.require)
    ) -> dict[str, Any] | JSONResponse:
        try:
            body = await service.read_submission(request.body)
        except WorkersBusy as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})
        except SubmissionError as exc:
            detail = problems(exc.detail) if isinstance(exc.detail, list) else exc.detail
            return JSONResponse({"detail": detail}, status_code=exc.status)
        except SpecErrors as exc:
            return _spec_errors(exc)
        except ClientDisconnect as exc:
            raise HTTPException(400, "the body ended before its Content-Length") from exc
        namespace = acting_namespace(principal, body.namespace, "batch specs")
        try:
            await grants.require(EXECUTION, namespace)
        except NotGranted as exc:
            raise HTTPException(403, str(exc)) from exc
        if body.errors is not None:
            return _spec_errors(body.errors)
        try:
            row = await service.submit(
                namespace,
                body.text,
                body.source,
                body.files,
                runs_locally=body.local,
                created_by=principal.username,
                parsed=body.spec,
            )
        except (MountError, UnknownSecret) as exc:
            raise HTTPException(400, str(exc).strip("'\"")) from exc
        except SpecErrors as exc:
            return _spec_errors(exc)
        return await service.progress(row.rand_id)

    @router.get("/specs/{rand_id}", responses=documented(404, 422))
    async def preview(
        rand_id: SpecId, principal: Principal = Depends(auth.require)
    ) -> dict[str, Any]:
        await visible_spec(principal, rand_id)
        return await _answer(lambda: service.preview(rand_id))

    # The preview's operations carry no diff or body, so that a spec of tens of thousands of
    # changesets previews in seconds; `offload batch preview --diff` and `--json` read them
    # here, a page at a time by id.
    @router.get("/specs/{rand_id}/changesets", responses=documented(404, 422))
    async def changesets(
        rand_id: SpecId,
        principal: Principal = Depends(auth.require),
        after: AfterQuery = 0,
        limit: Annotated[int, Query(ge=1, le=CHANGESETS_MAX)] = 500,
    ) -> list[dict[str, Any]]:
        await visible_spec(principal, rand_id)
        return await _answer(lambda: service.changesets(rand_id, after=after, limit=limit))

    @router.get("/specs/{rand_id}/workspaces", responses=documented(404, 422))
    async def workspaces(
        rand_id: SpecId,
        principal: Principal = Depends(auth.require),
        state: Annotated[WorkspaceState | None, Query()] = None,
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
            for w in await service.workspaces(row.id, state)
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
    @router.post(
        "/specs/{rand_id}/dequeue",
        response_model=None,
        responses={
            204: {"description": "No workspace is ready to run"},
            **documented(*BODY, 403, 404, 409),
        },
    )
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

    @router.post("/specs/{rand_id}/heartbeat", responses=documented(*BODY, 403, 404))
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

    @router.post("/specs/{rand_id}/apply", responses=documented(403, 404, 409, 422))
    async def apply(
        rand_id: SpecId, request: Request, principal: Principal = Depends(auth.require)
    ) -> dict[str, Any]:
        row = await visible_spec(principal, rand_id)
        applied = await _answer(lambda: service.apply(rand_id))
        await audit.by(
            principal, request, "batch.apply", f"{row.user_name}/{row.name}", spec=rand_id
        )
        return applied

    @router.get("/changes/{namespace}/{name}", responses=documented(404, 422))
    async def status(
        namespace: NamespaceName, name: ChangeName, principal: Principal = Depends(auth.require)
    ) -> dict[str, Any]:
        visible_namespace(principal, namespace, name)
        return await _answer(lambda: service.status(namespace, name))

    @router.get("/changes/{namespace}/{name}/logs", responses=documented(404, 422))
    async def logs(
        namespace: NamespaceName,
        name: ChangeName,
        principal: Principal = Depends(auth.require),
        spec: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE)] = None,
        repo: LongNameQuery = None,
    ) -> list[dict[str, Any]]:
        visible_namespace(principal, namespace, name)
        return await _answer(lambda: service.logs(namespace, name, spec=spec, repo=repo))

    @router.post("/changes/{namespace}/{name}/retry", responses=documented(*BODY, 403, 404, 409))
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

    @router.post("/changes/{namespace}/{name}/close", responses=documented(403, 404, 409, 422))
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
