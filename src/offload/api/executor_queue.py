"""The executor queue API under /.executors/: dequeue, heartbeat, logs, outcomes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from offload.api.errors import documented, text_answer
from offload.api.executor_auth import ExecutorAuth
from offload.dispatch.dispatcher import Dispatcher, UnknownQueue
from offload.dispatch.registry import ExecutorRegistry
from offload.protocol import routes
from offload.protocol.wire import (
    AddExecutionLogEntries,
    AddExecutionLogEntry,
    DequeueRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    JobOperation,
    MarkErrored,
    UpdateExecutionLogEntry,
)
from offload.queue.record import Lease, NotOwned

# The longest long-poll the server grants, whatever the executor asks for.
MAX_WAIT = 30.0


def not_owned(exc: NotOwned) -> JSONResponse:
    """404: the caller no longer holds the job (the protocol's 'unknown job')."""
    return JSONResponse({"error": str(exc)}, status_code=404)


def executor_router(
    dispatcher: Dispatcher, registry: ExecutorRegistry, auth: ExecutorAuth
) -> APIRouter:
    """The routes executors call."""
    router = APIRouter(prefix=routes.PREFIX, responses=documented(401, protocol=True))
    dequeued: dict[int | str, dict[str, Any]] = {
        204: {"description": "No job (after waiting up to `wait` seconds)"}
    }
    beat = documented(400, 413, protocol=True)
    job_call = documented(400, 404, 413, protocol=True)

    @router.get("/test/auth", response_class=Response, responses=text_answer(200, "ok"))
    async def test_auth(request: Request) -> PlainTextResponse:
        await auth.require_executor(request)
        return PlainTextResponse("ok")

    async def dequeue(request: Request, body: DequeueRequest, names: list[str]) -> Response:
        await auth.require_executor(request)
        if not body.executor_name:
            raise HTTPException(400, "executorName is required")
        try:
            leased = await dispatcher.dequeue(
                body.executor_name, names, wait=min(max(body.wait, 0.0), MAX_WAIT)
            )
        except UnknownQueue as exc:
            raise HTTPException(400, str(exc)) from exc
        if leased is None:
            return Response(status_code=204)
        return JSONResponse(leased.job.dump())

    @router.post("/queue/dequeue", responses={**dequeued, **beat})
    async def dequeue_any(request: Request, body: DequeueRequest) -> Response:
        return await dequeue(request, body, body.queues or [])

    @router.post("/queue/{queue}/dequeue", responses={**dequeued, **beat})
    async def dequeue_one(queue: str, request: Request, body: DequeueRequest) -> Response:
        return await dequeue(request, body, [queue])

    async def heartbeat(
        request: Request, body: HeartbeatRequest, queue: str | None
    ) -> dict[str, Any]:
        await auth.require_executor(request)
        if queue is not None:
            try:
                dispatcher.check([queue])
            except UnknownQueue as exc:
                raise HTTPException(400, str(exc)) from exc
        ids = body.ids_by_queue(queue)
        names = [queue] if queue is not None else (body.queue_names or list(ids))
        beats = await dispatcher.heartbeat(body.executor_name, ids)
        # The executors page lists the jobs the queues confirm this executor holds.
        await registry.heartbeat(body, names, {n: b.known_ids for n, b in beats.items()})

        def wire_id(job_id: int, name: str) -> str:
            return str(job_id) if queue is not None else f"{job_id}-{name}"

        return HeartbeatResponse(
            known_ids=[wire_id(i, n) for n, b in beats.items() for i in b.known_ids],
            cancel_ids=[wire_id(i, n) for n, b in beats.items() for i in b.cancel_ids],
        ).dump()

    @router.post("/queue/heartbeat", responses=beat)
    async def heartbeat_any(request: Request, body: HeartbeatRequest) -> dict[str, Any]:
        return await heartbeat(request, body, None)

    @router.post("/queue/{queue}/heartbeat", responses=beat)
    async def heartbeat_one(queue: str, request: Request, body: HeartbeatRequest) -> dict[str, Any]:
        return await heartbeat(request, body, queue)

    async def lease_of(request: Request, queue: str, body: JobOperation) -> Lease:
        if queue not in dispatcher.stores:
            raise HTTPException(404, f"unknown queue {queue}")
        grant = await auth.require_job(request, queue=queue)
        if grant is not None:
            # The protocol's answer to anyone but the holder is 404 ("unknown job"), so a
            # token tells nothing about jobs other than its own.
            if grant.job_id != body.job_id or grant.holder != body.executor_name:
                raise HTTPException(
                    404, f"job {body.job_id} of queue {queue} is not held by {body.executor_name}"
                )
            return grant.lease
        record = await dispatcher.stores[queue].get(body.job_id)
        if record is None or record.worker_hostname != body.executor_name or not record.lease_token:
            raise HTTPException(
                404, f"job {body.job_id} of queue {queue} is not held by {body.executor_name}"
            )
        return Lease(queue, body.job_id, body.executor_name, record.lease_token)

    @router.post("/queue/{queue}/addExecutionLogEntry", responses=job_call)
    async def add_log(queue: str, request: Request, body: AddExecutionLogEntry) -> Response:
        lease = await lease_of(request, queue, body)
        try:
            entry_id = await dispatcher.stores[queue].add_log_entry(lease, body.entry())
        except NotOwned as exc:
            return not_owned(exc)
        return JSONResponse(entry_id)

    @router.post("/queue/{queue}/addExecutionLogEntries", responses=job_call)
    async def add_logs(queue: str, request: Request, body: AddExecutionLogEntries) -> Response:
        lease = await lease_of(request, queue, body)
        entries = [entry.entry() for entry in body.entries]
        try:
            entry_ids = await dispatcher.stores[queue].add_log_entries(lease, entries)
        except NotOwned as exc:
            return not_owned(exc)
        return JSONResponse(entry_ids)

    @router.post("/queue/{queue}/updateExecutionLogEntry", status_code=204, responses=job_call)
    async def update_log(queue: str, request: Request, body: UpdateExecutionLogEntry) -> Response:
        lease = await lease_of(request, queue, body)
        try:
            await dispatcher.stores[queue].update_log_entry(lease, body.entry_id, body.entry())
        except NotOwned as exc:
            return not_owned(exc)
        return Response(status_code=204)

    async def finish(queue: str, lease: Lease, verb: str, message: str = "") -> Response:
        try:
            await dispatcher.finish(queue, lease, verb, message)
        except NotOwned as exc:
            return not_owned(exc)
        return Response(status_code=204)

    @router.post("/queue/{queue}/markComplete", status_code=204, responses=job_call)
    async def mark_complete(queue: str, request: Request, body: JobOperation) -> Response:
        return await finish(queue, await lease_of(request, queue, body), "complete")

    @router.post("/queue/{queue}/markErrored", status_code=204, responses=job_call)
    async def mark_errored(queue: str, request: Request, body: MarkErrored) -> Response:
        return await finish(
            queue, await lease_of(request, queue, body), "errored", body.error_message
        )

    @router.post("/queue/{queue}/markFailed", status_code=204, responses=job_call)
    async def mark_failed(queue: str, request: Request, body: MarkErrored) -> Response:
        return await finish(
            queue, await lease_of(request, queue, body), "failed", body.error_message
        )

    @router.post("/queue/{queue}/release", status_code=204, responses=job_call)
    async def release(queue: str, request: Request, body: JobOperation) -> Response:
        # offload: an executor that stops hands its unfinished jobs back at once.
        return await finish(queue, await lease_of(request, queue, body), "release")

    return router
