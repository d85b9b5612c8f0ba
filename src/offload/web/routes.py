"""The web interface's pages, served by the server process beside the API.

Who may see each: `/sign-in` anyone; every other page a signed-in user (others are sent to
sign in), showing only what their namespaces own (`/executors` is in web/executors.py).
Forms that change something carry the session's CSRF token; without it they get 403. A job's
live log (`/jobs/{id}/events`), its text (`/jobs/{id}/log.txt`), cancel and retry follow the
API's rules: whoever may act in the job's namespace, and site admins; others get 404.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from offload.batches.service import BatchService
from offload.codeintel.navigation import Navigator
from offload.codeintel.service import IndexService
from offload.dispatch.dispatcher import Dispatcher
from offload.dispatch.grants import QueueGrants
from offload.dispatch.registry import ExecutorRegistry
from offload.identity.audit import AuditLog
from offload.identity.authenticator import Authenticator, client_address
from offload.identity.principal import Principal
from offload.identity.sessions import COOKIE
from offload.identity.signin import PasswordSignIn
from offload.jobs.service import JobService, JobView
from offload.queue.states import State
from offload.queue.store import SqlQueueStore
from offload.repos.pulls import PullRequests
from offload.repos.syncer import Syncer
from offload.secrets.store import Secrets
from offload.web import livelog
from offload.web.forms import read_form
from offload.web.livelog import Cursor, LogFollower
from offload.web.pages import HEADERS, Pages, static_url
from offload.web.viewer import Viewer

JOBS_PER_PAGE = 50
# States a job may be canceled in (the queue's cancel statement), and retried in from a page.
CANCELABLE = {State.QUEUED, State.PROCESSING, State.ERRORED}
RETRYABLE = {State.FAILED, State.ERRORED, State.CANCELED}
# What the job page says after a form of it did something.
DONE = {
    "cancel": "Cancel requested: a waiting job ends at once, a running one when its executor "
    "next checks in.",
    "retry": "The job is queued again.",
}


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server only (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


class EventStream(StreamingResponse):
    """A `text/event-stream` response that calls `closed` once it ends, however it ends (a
    client that went away cancels the stream without finishing its generator)."""

    def __init__(self, content: AsyncIterator[str], closed: Callable[[], None]) -> None:
        # No buffering by a proxy in front (nginx), no caching: each event as it is made.
        headers = {**HEADERS, "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.closed = closed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.closed()


@dataclass(frozen=True)
class WebServices:
    """What the pages read and change: the same services as the API's routes."""

    auth: Authenticator
    sign_in: PasswordSignIn
    audit: AuditLog
    jobs: JobService
    batches: BatchService
    stores: list[SqlQueueStore]
    registry: ExecutorRegistry
    dispatcher: Dispatcher
    grants: QueueGrants
    syncer: Syncer
    pulls: PullRequests
    secrets: Secrets
    codeintel: IndexService
    navigator: Navigator


def web_router(pages: Pages, services: WebServices) -> APIRouter:
    """Every page of the web interface (not part of the API's OpenAPI document)."""
    router = APIRouter(include_in_schema=False)
    auth = services.auth

    who = Viewer(auth)
    signed_in, viewer, posted = who.signed_in, who.require, who.posted

    @router.get("/favicon.ico")
    async def favicon() -> Response:
        # Asked for by browsers on pages without a <link rel="icon"> (a text log, say).
        return RedirectResponse(static_url("icon.svg"), status_code=308)

    @router.get("/sign-in")
    async def sign_in_page(request: Request, next: str | None = None) -> Response:
        if await signed_in(request) is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        return pages.render(request, "sign_in.html", None, next=safe_next(next), error="")

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        form = await read_form(request)
        back = safe_next(form.get("next"))
        username, password = form.get("username", "")[:64], form.get("password", "")[:1024]
        if not username or not password:
            return pages.render(
                request,
                "sign_in.html",
                None,
                status=400,
                next=back,
                error="Enter your username and password.",
                username=username,
            )
        try:
            _, cookie, _ = await services.sign_in(username, password, client_address(request))
        except HTTPException as exc:
            return pages.render(
                request,
                "sign_in.html",
                None,
                status=exc.status_code,
                headers=exc.headers,
                next=back,
                error=str(exc.detail),
                username=username,
            )
        response = RedirectResponse(back, status_code=303)
        services.sign_in.set_cookie(request, response, cookie)
        return response

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        principal, _ = await posted(request)
        cookie = request.cookies.get(COOKIE)
        if cookie:
            await auth.sessions.end(cookie)
        await services.audit.by(principal, request, "sign-out")
        response = RedirectResponse("/sign-in", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def queue_rows() -> list[dict[str, Any]]:
        rows = []
        for store in services.stores:
            counts = await store.counts()
            rows.append(
                {
                    "name": store.spec.name,
                    "counts": {s.value: counts.get(s, 0) for s in State},
                    "oldest": await store.oldest_queued_age(),
                }
            )
        return rows

    @router.get("/")
    async def home(request: Request, principal: Principal = Depends(viewer)) -> Response:
        now = datetime.now(UTC)
        executors = await services.registry.list()
        return pages.render(
            request,
            "home.html",
            principal,
            queues=await queue_rows(),
            states=[s.value for s in State],
            online=sum(1 for e in executors if e.active(now)),
            executors=len(executors),
            jobs=await services.jobs.newest(principal.namespaces(), limit=10),
            changes=await services.batches.recent(principal.namespaces(), limit=10),
        )

    @router.get("/jobs")
    async def jobs(
        request: Request,
        principal: Principal = Depends(viewer),
        state: str = "",
        queue: str = "",
        namespace: str = "",
        repo: str = "",
        before: int | None = None,
    ) -> Response:
        states = {s.value: s for s in State}
        queues = [store.spec.name for store in services.stores]
        if state and state not in states:
            return pages.error(request, 400, f"No job state {state!r}.", principal)
        mine = principal.namespaces()
        if namespace and namespace not in mine and not principal.site_admin:
            return pages.error(request, 404, f"No namespace {namespace!r} of yours.", principal)
        shown = [namespace] if namespace else mine
        found = await services.jobs.newest(
            shown,
            limit=JOBS_PER_PAGE + 1,
            before=before if before is not None and before > 0 else None,
            state=states.get(state),
            queue=queue[:64] or None,
            repo=repo[:255] or None,
        )
        return pages.render(
            request,
            "jobs.html",
            principal,
            jobs=found[:JOBS_PER_PAGE],
            more=found[JOBS_PER_PAGE - 1].id if len(found) > JOBS_PER_PAGE else None,
            filters={
                "state": state,
                "queue": queue[:64],
                "namespace": namespace,
                "repo": repo[:255],
            },
            states=list(states),
            queues=queues,
            namespaces=mine,
        )

    async def visible_job(principal: Principal, job_id: int) -> JobView | None:
        """The job if `principal` may see it; None for a job of another namespace too."""
        view = await services.jobs.view(job_id) if 0 < job_id < 2**63 else None
        # Another namespace's job is not found rather than forbidden: no telling what exists.
        if view is None or not principal.may_act_in(view.namespace):
            return None
        return view

    @router.get("/jobs/{job_id}")
    async def job(
        request: Request, job_id: int, principal: Principal = Depends(viewer), did: str = ""
    ) -> Response:
        view = await visible_job(principal, job_id)
        if view is None:
            return pages.error(request, 404, f"No job {job_id}.", principal)
        logs = await services.jobs.logs(job_id)
        return pages.render(
            request,
            "job.html",
            principal,
            job=view,
            logs=logs,
            since=str(livelog.cursor_after(logs)),
            live=not view.state.finished,
            cancelable=view.state in CANCELABLE,
            retryable=view.state in RETRYABLE,
            done=DONE.get(did, ""),
        )

    @router.get("/jobs/{job_id}/log.txt")
    async def job_log_text(
        request: Request, job_id: int, principal: Principal = Depends(viewer)
    ) -> Response:
        if await visible_job(principal, job_id) is None:
            return pages.error(request, 404, f"No job {job_id}.", principal)
        text = livelog.plain_text(await services.jobs.logs(job_id))
        return PlainTextResponse(text, headers=HEADERS)

    # Streams open per user in this process: a bound on the polling one user can cause.
    streams: collections.Counter[str] = collections.Counter()

    @router.get("/jobs/{job_id}/events")
    async def job_events(
        request: Request, job_id: int, principal: Principal = Depends(viewer), since: str = ""
    ) -> Response:
        view = await visible_job(principal, job_id)
        store = services.jobs.stores.get(view.queue) if view is not None else None
        if view is None or store is None:
            return pages.error(request, 404, f"No job {job_id}.", principal)
        user = principal.username
        if streams[user] >= livelog.MAX_STREAMS_PER_USER:
            page = pages.error(
                request,
                429,
                f"{livelog.MAX_STREAMS_PER_USER} live logs are open already; close a page "
                "that shows one, or reload this one later.",
                principal,
            )
            page.headers["Retry-After"] = "10"
            return page
        streams[user] += 1

        def closed() -> None:
            streams[user] -= 1
            if streams[user] <= 0:
                del streams[user]

        # A reconnecting EventSource says where it stopped; a page, where its log ended.
        start = Cursor.parse(request.headers.get("last-event-id") or since)

        async def events() -> AsyncIterator[str]:
            follower = LogFollower(start)
            state: State | None = None
            now = time.monotonic()
            deadline, quiet_since = now + livelog.STREAM_SECONDS, now
            yield f"retry: {livelog.RETRY_MS}\n\n"
            while True:
                record = await store.get(job_id)
                if record is None:  # deleted by the retention of finished jobs
                    yield livelog.event("end", {"state": None})
                    return
                # Read after the state: a finished job's entries are all written by then.
                read = await store.logs_from(job_id, *follower.frontier())
                for chunk in follower.changes(read):
                    quiet_since = time.monotonic()
                    yield chunk
                if record.state != state:
                    state = record.state
                    yield livelog.event("state", {"state": state.value})
                if record.state.finished:
                    yield livelog.event("end", {"state": record.state.value})
                    return
                now = time.monotonic()
                if now >= deadline:
                    return
                if now - quiet_since >= livelog.KEEPALIVE_SECONDS:
                    quiet_since = now
                    yield ": keepalive\n\n"
                await asyncio.sleep(livelog.POLL_INTERVAL)
                if await request.is_disconnected():
                    return

        return EventStream(events(), closed)

    async def posted_job(request: Request, job_id: int) -> tuple[Principal, JobView | None]:
        principal, _ = await posted(request)
        return principal, await visible_job(principal, job_id)

    @router.post("/jobs/{job_id}/cancel")
    async def cancel_job(request: Request, job_id: int) -> Response:
        principal, view = await posted_job(request, job_id)
        if view is None:
            return pages.error(request, 404, f"No job {job_id}.", principal)
        if await services.jobs.cancel(job_id) is None:
            return pages.error(
                request, 409, f"Job {job_id} has already finished ({view.state.value}).", principal
            )
        await services.audit.by(principal, request, "job.cancel", f"job {job_id}")
        return RedirectResponse(f"/jobs/{job_id}?did=cancel", status_code=303)

    @router.post("/jobs/{job_id}/retry")
    async def retry_job(request: Request, job_id: int) -> Response:
        principal, view = await posted_job(request, job_id)
        if view is None:
            return pages.error(request, 404, f"No job {job_id}.", principal)
        if not await services.jobs.retry(job_id):
            return pages.error(
                request,
                409,
                f"Job {job_id} is {view.state.value}; only a job that is not running retries.",
                principal,
            )
        await services.audit.by(principal, request, "job.retry", f"job {job_id}")
        return RedirectResponse(f"/jobs/{job_id}?did=retry", status_code=303)

    return router
