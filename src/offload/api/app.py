"""The server's FastAPI application: the composition root of every HTTP route."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from offload import __version__, metrics
from offload.api.executor_auth import ExecutorAuth
from offload.api.executor_queue import executor_router
from offload.batches.routes import batches_router
from offload.batches.service import BatchService
from offload.config import Settings
from offload.db.base import Database
from offload.dispatch.dispatcher import Dispatcher
from offload.dispatch.registry import ExecutorRegistry
from offload.jobs.routes import jobs_router
from offload.jobs.service import JobService
from offload.protocol import routes
from offload.queue.gauges import measure
from offload.queue.store import SqlQueueStore
from offload.queues import executor_queues, record_queues
from offload.repos.githttp import git_router
from offload.repos.mirror import Mirrors
from offload.repos.pulls import PullRequests, PullRequestStore
from offload.repos.registry import RepoRegistry
from offload.repos.routes import pulls_router


def create_app(db: Database, settings: Settings) -> FastAPI:
    """The server application over an open database."""
    app = FastAPI(title="offload", version=__version__)
    stores = [SqlQueueStore(db, spec) for spec in record_queues(settings).values()]
    dispatcher = Dispatcher(db, executor_queues(settings))
    registry = ExecutorRegistry(db)
    auth = ExecutorAuth(db, dispatcher.tokens)
    app.state.dispatcher = dispatcher
    app.state.executor_auth = auth
    app.include_router(executor_router(dispatcher, registry, auth))
    repos = RepoRegistry(db)
    mirrors = Mirrors.in_data_dir(settings.data_dir)

    async def job_may_fetch(request: Request, repo: str) -> None:
        # Executors fetch with their job's token, and only their job's repository.
        await auth.require_job(request, repo=repo)

    app.include_router(
        git_router(repos, mirrors, authorize=job_may_fetch), prefix=routes.PREFIX + "/git"
    )

    async def resolve(repo: str, rev: str) -> str:
        if await repos.get(repo) is None:
            raise LookupError(f"unknown repository {repo!r}; add it with `offload repos add`")
        commit = await mirrors.resolve(repo, rev)
        if commit is None:
            raise LookupError(f"repository {repo} has no revision {rev!r}")
        return commit

    app.include_router(jobs_router(JobService(db, resolve, settings.job_queues)))
    app.include_router(batches_router(BatchService(db), dispatcher))
    app.include_router(pulls_router(PullRequests(PullRequestStore(db), repos, mirrors)))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        # Executors expect 400 with a reason for a body they got wrong, as their protocol says.
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "malformed request"}
        where = ".".join(str(p) for p in first["loc"])
        message = f"bad request: {where}: {first['msg']}"
        if request.url.path.startswith(routes.PREFIX):
            return PlainTextResponse(message, status_code=400)
        return JSONResponse({"detail": exc.errors()}, status_code=422)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        await db.fetch("SELECT 1")
        return {"status": "ok", "version": __version__}

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {"version": __version__}

    @app.get("/metrics")
    async def prometheus() -> Response:
        # Fresh at every scrape: the server runs no periodic job of its own.
        for store in stores:
            await measure(store)
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    @app.get("/api/queues")
    async def queues() -> list[dict[str, Any]]:
        out = []
        for store in stores:
            age = await store.oldest_queued_age()
            out.append(
                {
                    "queue": store.spec.name,
                    "counts": {s.value: n for s, n in (await store.counts()).items()},
                    "oldest_queued_seconds": age.total_seconds() if age else None,
                }
            )
        return out

    return app
