"""The executors page (site admins): who is connected, what each runs and under which limits;
the executor token (reveal, rotate).

Site admins only: anyone else gets a 403 page. The token appears only on the page that answers
a POST form carrying the session's CSRF token, never in a URL. Rotating asks for a confirmation
box, takes effect at once in this server process (other server processes within their cache's
TOKEN_TTL) and is audited as the API's PUT /api/executors/token is.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from offload.api.executor_auth import TOKEN_TTL, ExecutorAuth
from offload.batches.queue import NAME as BATCH_QUEUE
from offload.dispatch.access import executor_token, new_token, set_executor_token
from offload.dispatch.registry import Executor
from offload.identity.principal import Principal
from offload.web.pages import Pages
from offload.web.routes import WebServices
from offload.web.viewer import Viewer

# How the page names each kind of job limit an executor reports, in the order it shows them;
# kinds it does not know follow, by name.
LIMIT_LABELS = {
    "memory": "memory",
    "cpus": "CPUs",
    "pids": "pids",
    "disk": "disk",
    "tmp": "/tmp",
    "output": "output",
    "time": "time",
}
# The most running jobs named per executor; the count says how many there are in all.
RUNNING_SHOWN = 20
ONLY_ADMINS = "Only site admins see the executors and their token."
ROTATED = (
    "The executor token was replaced. Executors still using the old one are refused from now "
    f"on (by other server processes within {TOKEN_TTL:.0f} s): give them this one as "
    "EXECUTOR_REGISTRATION_TOKEN and restart them."
)
UNCONFIRMED = "Nothing changed: tick the box to confirm that executors must get the new token."


@dataclass(frozen=True)
class RunningJob:
    """A job an executor holds, as the page names it; `href` for a job with a page."""

    label: str
    href: str | None


@dataclass(frozen=True)
class ExecutorRow:
    """One executor's row: whether it is active, its limits (None: not reported), its jobs."""

    executor: Executor
    active: bool
    limits: list[tuple[str, str]] | None
    running: list[RunningJob]
    more: int


def limit_items(limits: dict[str, str] | None) -> list[tuple[str, str]] | None:
    """(label, value) pairs in the page's order; None when the executor did not report."""
    if limits is None:
        return None
    order = [k for k in LIMIT_LABELS if k in limits] + sorted(set(limits) - set(LIMIT_LABELS))
    return [(LIMIT_LABELS.get(kind, kind), limits[kind]) for kind in order]


def running_jobs(executor: Executor, job_queues: Collection[str]) -> list[RunningJob]:
    """The jobs `executor` held at its last heartbeat, by queue then id."""
    jobs = []
    for queue in sorted(executor.running):
        for job_id in sorted(executor.running[queue]):
            if queue in job_queues:
                jobs.append(RunningJob(f"job {job_id}", f"/jobs/{job_id}"))
            elif queue == BATCH_QUEUE:
                # Batch workspace jobs have no page of their own yet.
                jobs.append(RunningJob(f"batch workspace job {job_id}", None))
            else:
                jobs.append(RunningJob(f"{queue} job {job_id}", None))
    return jobs


def executors_router(pages: Pages, services: WebServices, executor_auth: ExecutorAuth) -> APIRouter:
    """/executors and its token forms."""
    router = APIRouter(include_in_schema=False)
    who = Viewer(services.auth)
    db = services.registry.db

    async def page(
        request: Request,
        principal: Principal,
        *,
        status: int = 200,
        token: str = "",
        done: str = "",
        error: str = "",
    ) -> Response:
        now = datetime.now(UTC)
        job_queues = set(services.jobs.stores)
        rows = []
        for e in await services.registry.list():
            running = running_jobs(e, job_queues)
            rows.append(
                ExecutorRow(
                    executor=e,
                    active=e.active(now),
                    limits=limit_items(e.limits),
                    running=running[:RUNNING_SHOWN],
                    more=max(0, len(running) - RUNNING_SHOWN),
                )
            )
        return pages.render(
            request,
            "executors.html",
            principal,
            status=status,
            now=now,
            executors=rows,
            token=token,
            done=done,
            error=error,
        )

    @router.get("/executors")
    async def executors(request: Request, principal: Principal = Depends(who.require)) -> Response:
        if not principal.site_admin:
            return pages.error(request, 403, ONLY_ADMINS, principal)
        return await page(request, principal)

    # Both forms answer with the page itself: a token must never travel in a redirect's URL.
    @router.post("/executors/token/reveal")
    async def reveal(request: Request) -> Response:
        principal, _ = await who.posted(request)
        if not principal.site_admin:
            return pages.error(request, 403, ONLY_ADMINS, principal)
        token = await executor_token(db)
        await services.audit.by(principal, request, "executors.token.reveal")
        return await page(request, principal, token=token)

    @router.post("/executors/token/rotate")
    async def rotate(request: Request) -> Response:
        principal, form = await who.posted(request)
        if not principal.site_admin:
            return pages.error(request, 403, ONLY_ADMINS, principal)
        if form.get("confirm") != "yes":
            return await page(request, principal, status=400, error=UNCONFIRMED)
        token = new_token()
        await set_executor_token(db, token)
        executor_auth.forget()
        await services.audit.by(principal, request, "executors.token")
        return await page(request, principal, token=token, done=ROTATED)

    return router
