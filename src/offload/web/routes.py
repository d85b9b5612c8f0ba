"""The web interface's pages, served by the server process beside the API.

Who may see each: `/sign-in` anyone; every other page a signed-in user (others are sent to
sign in), showing only what their namespaces own; `/executors` site admins (others 403).
Forms that change something carry the session's CSRF token; without it they get 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from offload.batches.service import BatchService
from offload.dispatch.registry import ExecutorRegistry
from offload.identity.audit import AuditLog
from offload.identity.authenticator import Authenticator, client_address
from offload.identity.principal import Principal
from offload.identity.sessions import COOKIE
from offload.identity.signin import PasswordSignIn
from offload.jobs.service import JobService
from offload.queue.states import State
from offload.queue.store import SqlQueueStore
from offload.web.forms import read_form
from offload.web.pages import Pages

JOBS_PER_PAGE = 50


class SignInRequired(Exception):
    """A page was asked for without a session: the browser goes to sign in, then back."""

    def __init__(self, back_to: str) -> None:
        super().__init__(back_to)
        self.back_to = back_to


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server only (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def sign_in_redirect(exc: SignInRequired) -> RedirectResponse:
    """The redirect to the sign-in page that brings the user back afterwards."""
    return RedirectResponse(f"/sign-in?next={quote(exc.back_to, safe='/')}", status_code=303)


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


def web_router(pages: Pages, services: WebServices) -> APIRouter:
    """Every page of the web interface (not part of the API's OpenAPI document)."""
    router = APIRouter(include_in_schema=False)
    auth = services.auth

    async def signed_in(request: Request) -> Principal | None:
        try:
            return await auth.optional(request)
        except HTTPException as exc:
            if exc.status_code == 401:  # a session that ended, a user since disabled
                return None
            raise

    async def viewer(request: Request) -> Principal:
        principal = await signed_in(request)
        if principal is None:
            back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise SignInRequired(back)
        return principal

    async def posted(request: Request) -> tuple[Principal, dict[str, str]]:
        """The signed-in user behind a form, proven by the form's CSRF token, and its fields."""
        form = await read_form(request)
        try:
            principal = await auth.optional(request, csrf=form.get("csrf", ""))
        except HTTPException as exc:
            if exc.status_code == 401:
                raise SignInRequired("/") from exc
            raise
        if principal is None:
            raise SignInRequired("/")
        return principal, form

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

    @router.get("/executors")
    async def executors(request: Request, principal: Principal = Depends(viewer)) -> Response:
        if not principal.site_admin:
            return pages.error(request, 403, "Only site admins see the executors.", principal)
        now = datetime.now(UTC)
        return pages.render(
            request,
            "executors.html",
            principal,
            now=now,
            executors=[(e, e.active(now)) for e in await services.registry.list()],
        )

    @router.get("/jobs")
    async def jobs(
        request: Request,
        principal: Principal = Depends(viewer),
        state: str = "",
        queue: str = "",
        namespace: str = "",
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
        )
        return pages.render(
            request,
            "jobs.html",
            principal,
            jobs=found[:JOBS_PER_PAGE],
            more=found[JOBS_PER_PAGE - 1].id if len(found) > JOBS_PER_PAGE else None,
            filters={"state": state, "queue": queue[:64], "namespace": namespace},
            states=list(states),
            queues=queues,
            namespaces=mine,
        )

    @router.get("/jobs/{job_id}")
    async def job(
        request: Request, job_id: int, principal: Principal = Depends(viewer)
    ) -> Response:
        view = await services.jobs.view(job_id) if 0 < job_id < 2**63 else None
        # Another namespace's job is not found rather than forbidden: no telling what exists.
        if view is None or not principal.may_act_in(view.namespace):
            return pages.error(request, 404, f"No job {job_id}.", principal)
        return pages.render(
            request, "job.html", principal, job=view, logs=await services.jobs.logs(job_id)
        )

    return router
