"""The server's FastAPI application: the composition root of every HTTP route."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from offload import __version__, metrics
from offload.api.bodylimit import BodyLimit
from offload.api.errors import documented, problems, text_answer, unreadable_body
from offload.api.executor_auth import ExecutorAuth
from offload.api.executor_queue import executor_router
from offload.batches.routes import batches_router
from offload.batches.service import BatchService
from offload.codeintel.events import UsageEvents
from offload.codeintel.navigation import Navigator
from offload.codeintel.queue import NAME as INDEX_QUEUE
from offload.codeintel.routes import codeintel_router
from offload.codeintel.service import IndexService
from offload.codeintel.uploads.routes import uploads_router
from offload.config import Settings
from offload.db.base import Database
from offload.dispatch.dispatcher import Dispatcher
from offload.dispatch.grants import QueueGrants
from offload.dispatch.registry import ExecutorRegistry
from offload.dispatch.routes import dispatch_router
from offload.identity.audit import AuditLog
from offload.identity.authenticator import Authenticator
from offload.identity.principal import Principal
from offload.identity.ratelimit import SignInLimiter
from offload.identity.routes import identity_router
from offload.identity.sessions import Sessions
from offload.identity.signin import PasswordSignIn
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
from offload.repos.routes import pulls_router, repos_router
from offload.repos.syncer import Syncer
from offload.secrets.cipher import Cipher
from offload.secrets.routes import secrets_router
from offload.secrets.store import Secrets
from offload.web.admin import admin_router
from offload.web.batches import batches_router as batches_pages
from offload.web.codeintel import codeintel_pages_router
from offload.web.editor import editor_router
from offload.web.executors import executors_router
from offload.web.orgs import orgs_router
from offload.web.pages import STATIC, Pages, is_page_request
from offload.web.profile import profile_router
from offload.web.repositories import repositories_router
from offload.web.routes import WebServices, web_router
from offload.web.secrets import secret_pages_router
from offload.web.users import users_router
from offload.web.viewer import SignInRequired, sign_in_redirect

# What FastAPI says of a body it could not parse (fastapi/routing.py).
UNPARSED_BODY = "There was an error parsing the body"


def create_app(db: Database, settings: Settings) -> FastAPI:
    """The server application over an open database."""
    # The API's description is served to signed-in users only (below), like every other route.
    app = FastAPI(
        title="offload", version=__version__, openapi_url=None, docs_url=None, redoc_url=None
    )
    app.add_middleware(BodyLimit, settings=settings)
    secrets = Secrets(db, Cipher.from_settings(settings))
    stores = [SqlQueueStore(db, spec) for spec in record_queues(settings).values()]
    queues = executor_queues(settings, secrets)
    dispatcher = Dispatcher(db, queues)
    registry = ExecutorRegistry(db)
    executor_auth = ExecutorAuth(db, dispatcher.tokens)
    sessions = Sessions(db, ttl=settings.session_ttl)
    auth = Authenticator(db, sessions)
    audit = AuditLog(db)
    grants = QueueGrants(db, settings.open_queues)
    app.state.dispatcher = dispatcher
    app.state.executor_auth = executor_auth
    app.state.auth = auth
    app.state.secrets = secrets
    app.include_router(executor_router(dispatcher, registry, executor_auth))
    repos = RepoRegistry(db)
    mirrors = Mirrors.in_data_dir(settings.data_dir)

    async def job_may_fetch(request: Request, repo: str) -> None:
        # Executors fetch with their job's token, and only their job's repository.
        await executor_auth.require_job(request, repo=repo)

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

    jobs = JobService(db, resolve, settings.job_queues, secrets=secrets, grants=grants)
    app.state.jobs = jobs
    limiter = SignInLimiter()
    batches = BatchService(db, secrets=secrets)
    app.include_router(identity_router(auth, sessions, audit, limiter))
    app.include_router(jobs_router(jobs, auth, audit))
    app.include_router(batches_router(batches, dispatcher, grants, auth, audit))
    pulls = PullRequests(PullRequestStore(db), repos, mirrors)
    syncer = Syncer(repos, mirrors)
    app.include_router(pulls_router(pulls, auth, audit))
    app.include_router(repos_router(syncer, auth, audit))
    codeintel = IndexService(db, repos, mirrors)
    # One navigator for the API and the pages: one cache of decoded documents, and every
    # lookup counted once in the usage that ranks repositories.
    navigator = Navigator(db, mirrors, events=UsageEvents(db))
    app.include_router(codeintel_router(codeintel, navigator, auth, audit))
    app.include_router(
        uploads_router(
            db,
            lambda request: executor_auth.require_job(request, queue=INDEX_QUEUE),
            settings.data_dir,
        )
    )
    app.include_router(
        dispatch_router(
            stores,
            list(queues),
            grants,
            registry,
            auth,
            audit,
            token_replaced=executor_auth.forget,
        )
    )
    app.include_router(secrets_router(secrets, auth, audit))
    pages = Pages()
    web = WebServices(
        auth=auth,
        sign_in=PasswordSignIn(auth.users, sessions, audit, limiter),
        audit=audit,
        jobs=jobs,
        batches=batches,
        stores=stores,
        registry=registry,
        dispatcher=dispatcher,
        grants=grants,
        syncer=syncer,
        pulls=pulls,
        secrets=secrets,
        codeintel=codeintel,
        navigator=navigator,
    )
    app.include_router(web_router(pages, web))
    app.include_router(editor_router(pages, web))
    app.include_router(profile_router(pages, web))
    app.include_router(repositories_router(pages, web))
    app.include_router(secret_pages_router(pages, web))
    app.include_router(admin_router(pages, web))
    app.include_router(users_router(pages, web))
    app.include_router(orgs_router(pages, web))
    app.include_router(batches_pages(pages, web))
    app.include_router(executors_router(pages, web, executor_auth))
    app.include_router(codeintel_pages_router(pages, web))
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(SignInRequired)
    async def sign_in_first(request: Request, exc: SignInRequired) -> Response:
        return sign_in_redirect(exc)

    described = app.openapi

    def document() -> dict[str, Any]:
        # The executor protocol answers an invalid request with 400 (bad_request below), never
        # with the 422 that FastAPI documents for every route with parameters.
        if app.openapi_schema is None:
            for path, operations in described()["paths"].items():
                if path.startswith(routes.PREFIX + "/"):
                    for operation in operations.values():
                        operation["responses"].pop("422", None)
        return described()

    app.openapi = document  # type: ignore[method-assign]

    @app.get("/api/openapi.json", include_in_schema=False)
    async def openapi(_: Principal = Depends(auth.require)) -> dict[str, Any]:
        return app.openapi()

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        found = problems(exc.errors()) or [{"loc": [], "msg": "malformed request"}]
        if request.url.path.startswith(routes.PREFIX):
            # Executors expect 400 with a reason for a body they got wrong, as their protocol
            # says.
            first = found[0]
            where = ".".join(str(p) for p in first["loc"])
            return PlainTextResponse(f"bad request: {where}: {first['msg']}", status_code=400)
        if is_page_request(request):
            # A page's address with a malformed part (`/jobs/abc`, `?before=x`): an error page.
            said = "; ".join(
                f"{'.'.join(str(p) for p in f['loc'][1:]) or 'request'}: {f['msg']}" for f in found
            )
            return pages.error(request, 400, f"This address cannot be read: {said}.")
        return JSONResponse({"detail": found}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI answers a body it cannot parse with a 400 that does not say why; the cause
        # does (an integer of 100,000 digits, nesting too deep, bytes that are not UTF-8).
        if exc.status_code == 400 and exc.detail == UNPARSED_BODY:
            exc = StarletteHTTPException(400, unreadable_body(exc.__cause__), exc.headers)
        if is_page_request(request):
            # A browser asked for a page: an error page, not the API's JSON.
            return pages.error(request, exc.status_code, str(exc.detail))
        return await http_exception_handler(request, exc)

    # 401 and 403 only once OFFLOAD_STATUS_ROUTES closes them to all but site admins.
    status_errors = documented(401, 403)

    async def status_reader(request: Request) -> Principal | None:
        # Open to monitoring by default; a site admin's token once OFFLOAD_STATUS_ROUTES says so.
        if settings.status_routes == "public":
            return None
        return await auth.require_site_admin(request)

    @app.get("/healthz", dependencies=[Depends(status_reader)], responses=status_errors)
    async def healthz() -> dict[str, Any]:
        await db.fetch("SELECT 1")
        return {"status": "ok", "version": __version__}

    @app.get("/version", dependencies=[Depends(status_reader)], responses=status_errors)
    async def version() -> dict[str, str]:
        return {"version": __version__}

    @app.get(
        "/metrics",
        dependencies=[Depends(status_reader)],
        # Prometheus' text format; only the errors are JSON.
        response_class=Response,
        responses={**text_answer(200, "Metrics in Prometheus' text format"), **status_errors},
    )
    async def prometheus() -> Response:
        # Fresh at every scrape: the server runs no periodic job of its own.
        for store in stores:
            await measure(store)
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    return app
