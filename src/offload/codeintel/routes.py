"""HTTP routes of code intelligence under /api/codeintel.

Who may call each:
- any signed-in user: usage events (`events`, from tools that answer code navigation), the
  ranking, which jobs a commit gets (`infer`), a repository's configuration and
  status, the index jobs and their logs, queueing a repository's index (`index`: jobs are
  deduplicated per commit, root and indexer, so asking twice costs nothing), and code
  navigation (`{repo}/definitions`, `/references`, `/hover`);
- site admins only: setting or deleting a repository's configuration (it decides which images
  and commands run on the executors).
The mirrored code and what indexes it are the site's, like repositories themselves.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi import Path as FastApiPath
from pydantic import BaseModel, ConfigDict, Field

from offload.api.errors import documented
from offload.api.inputs import LONG_NAME_MAX, PRINTABLE, IdPath
from offload.codeintel import ranking
from offload.codeintel.config import MAX_CONFIG_BYTES, ConfigErrors
from offload.codeintel.events import EventsRequest, UsageEvents
from offload.codeintel.inference import Selection
from offload.codeintel.navigation import Answer, Navigator
from offload.codeintel.queue import SPEC as INDEX_JOBS
from offload.codeintel.service import (
    SOURCES,
    IndexService,
    Queueing,
    UnknownRepository,
    errors_json,
)
from offload.codeintel.store import CodeintelStore
from offload.identity.audit import AuditLog
from offload.identity.authenticator import Authenticator
from offload.identity.principal import Principal
from offload.queue.store import SqlQueueStore
from offload.repos.mirror import GitError

RepoQuery = Annotated[str, Query(min_length=1, max_length=LONG_NAME_MAX, pattern=PRINTABLE)]
# A revision as git names one: a branch, a tag, a commit, `HEAD~2`.
RevQuery = Annotated[str, Query(min_length=1, max_length=LONG_NAME_MAX, pattern=PRINTABLE)]
State = Literal["queued", "processing", "completed", "errored", "failed", "canceled"]
RepoPath = Annotated[str, FastApiPath(min_length=1, max_length=LONG_NAME_MAX, pattern=PRINTABLE)]
# A file's path in the repository; `checked_path` refuses absolute ones and `..`.
PathQuery = Annotated[str, Query(min_length=1, max_length=4096, pattern=r"^[^\x00-\x1f\x7f]+$")]
# 0-based, as in LSP and SCIP; the bounds keep numbers within the database's integers.
LineQuery = Annotated[int, Query(ge=0, le=10_000_000)]


class IndexRequest(BaseModel):
    """Queue a repository's index jobs at a revision (default: its default branch's head)."""

    model_config = ConfigDict(extra="forbid")

    repo: str = Field(min_length=1, max_length=LONG_NAME_MAX, pattern=PRINTABLE)
    commit: str | None = Field(
        default=None, min_length=1, max_length=LONG_NAME_MAX, pattern=PRINTABLE
    )


def selection_json(repo: str, commit: str, selection: Selection) -> dict[str, Any]:
    """A commit's index jobs as the API shows them: each job's payload with its `why`."""
    return {
        "repo": repo,
        "commit": commit,
        "source": SOURCES[selection.source],
        "jobs": [{**job.payload(), "why": job.why} for job in selection.jobs],
        "errors": [{k: v for k, v in e.items() if k != "file"} for e in errors_json(selection)],
        "notes": list(selection.notes),
    }


def queueing_json(done: Queueing) -> dict[str, Any]:
    """What queueing did, as the API shows it."""
    return {
        "repo": done.repo,
        "commit": done.commit,
        "source": done.source,
        "jobs": [
            {"id": q.id, "root": q.root, "indexer": q.indexer, "outcome": q.outcome}
            for q in done.jobs
        ],
        "errors": list(done.errors),
        "notes": list(done.notes),
    }


def checked_path(path: str) -> str:
    """`path` if it names a file inside a repository; a 422 saying why otherwise."""
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise HTTPException(
            422,
            f"path {path!r} must be a file's path from the repository's root, like "
            "src/main.py: no leading /, no empty, . or .. parts",
        )
    return path


def range_json(where: tuple[int, int, int, int]) -> dict[str, Any]:
    """A 0-based range as LSP writes one."""
    return {
        "start": {"line": where[0], "character": where[1]},
        "end": {"line": where[2], "character": where[3]},
    }


def answer_json(answer: Answer, *, hover: bool = False) -> dict[str, Any]:
    """A navigation answer as the API shows it."""
    upload = answer.upload
    out: dict[str, Any] = {
        "repo": answer.repo,
        "commit": answer.commit,
        "path": answer.path,
        "line": answer.line,
        "character": answer.character,
        "upload": {"id": upload.id, "commit": upload.commit_sha} if upload else None,
        "adjusted": answer.adjusted,
    }
    if hover:
        out["contents"] = answer.contents
        out["range"] = range_json(answer.range) if answer.range else None
    else:
        out["locations"] = [
            {
                "repo": loc.repo,
                "commit": loc.commit,
                "path": loc.path,
                "range": range_json(loc.range),
            }
            for loc in answer.locations
        ]
        out["truncated"] = answer.truncated
    out["reason"] = answer.reason
    return out


def codeintel_router(
    service: IndexService, navigator: Navigator, auth: Authenticator, audit: AuditLog
) -> APIRouter:
    """/api/codeintel."""
    router = APIRouter(prefix="/api/codeintel", responses=documented(401))
    logs = SqlQueueStore(service.db, INDEX_JOBS)
    usage = UsageEvents(service.db)
    store = CodeintelStore(service.db)

    def missing(exc: UnknownRepository | GitError) -> HTTPException:
        return HTTPException(404, str(exc))

    @router.get("/infer", responses=documented(404, 422, 503))
    async def infer(
        repo: RepoQuery,
        commit: RevQuery = "HEAD",
        _: Principal = Depends(auth.require),
    ) -> dict[str, Any]:
        try:
            resolved = await service.resolve(repo, commit)
        except UnknownRepository as exc:
            raise missing(exc) from exc
        try:
            selection = await service.select(repo, resolved)
        except GitError as exc:  # the mirror broke under us: git's own words say how
            raise HTTPException(
                503, f"cannot read {repo} at {resolved[:12]}: {exc}; sync it and try again"
            ) from exc
        return selection_json(repo, resolved, selection)

    @router.post("/index", status_code=201, responses=documented(404, 422, 503))
    async def index(
        request: Request, body: IndexRequest, principal: Principal = Depends(auth.require)
    ) -> dict[str, Any]:
        try:
            done = await service.queue(
                body.repo, body.commit, manual=True, requested_by=principal.username
            )
        except UnknownRepository as exc:
            raise missing(exc) from exc
        except GitError as exc:
            raise HTTPException(503, f"cannot read {body.repo}: {exc}") from exc
        await audit.by(principal, request, "codeintel.index", f"{body.repo}@{done.commit[:12]}")
        return queueing_json(done)

    @router.get("/config", responses=documented(404, 422))
    async def get_config(repo: RepoQuery, _: Principal = Depends(auth.require)) -> dict[str, Any]:
        try:
            await service.resolve(repo, None)
        except UnknownRepository as exc:
            raise missing(exc) from exc
        return {"repo": repo, "config": await service.config(repo)}

    @router.put("/config", responses=documented(400, 403, 404, 413, 422))
    async def put_config(
        request: Request,
        repo: RepoQuery,
        config: Annotated[str, Body(media_type="text/plain", max_length=MAX_CONFIG_BYTES)],
        principal: Principal = Depends(auth.require_site_admin),
    ) -> dict[str, Any]:
        try:
            jobs = await service.set_config(repo, config, by=principal.username)
        except UnknownRepository as exc:
            raise missing(exc) from exc
        except ConfigErrors as exc:
            lines = [f"configuration:{e}" for e in exc.errors]
            raise HTTPException(
                400, "the configuration is not valid; nothing was stored:\n" + "\n".join(lines)
            ) from exc
        await audit.by(principal, request, "codeintel.config.set", repo)
        return {"repo": repo, "jobs": jobs}

    @router.delete("/config", responses=documented(403, 404, 422))
    async def delete_config(
        request: Request, repo: RepoQuery, principal: Principal = Depends(auth.require_site_admin)
    ) -> dict[str, Any]:
        if not await service.delete_config(repo):
            raise HTTPException(404, f"repository {repo} has no index configuration")
        await audit.by(principal, request, "codeintel.config.delete", repo)
        return {"repo": repo, "deleted": True}

    @router.get("/status", responses=documented(404, 422))
    async def status(repo: RepoQuery, _: Principal = Depends(auth.require)) -> dict[str, Any]:
        try:
            await service.resolve(repo, None)
        except UnknownRepository as exc:
            raise missing(exc) from exc
        found = await service.status(repo)
        jobs = await service.index_jobs(repo=repo, limit=20)
        return {
            "repo": repo,
            "configured": await service.config(repo) is not None,
            "status": found.to_json() if found else None,
            "indexJobs": [j.to_json() for j in jobs],
        }

    @router.get("/indexes", responses=documented(422))
    async def indexes(
        repo: RepoQuery | None = None,
        state: Annotated[list[State] | None, Query(max_length=6)] = None,
        before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        _: Principal = Depends(auth.require),
    ) -> dict[str, Any]:
        jobs = await service.index_jobs(repo=repo, states=state or (), limit=limit, before=before)
        more = len(jobs) == limit
        return {
            "indexJobs": [j.to_json() for j in jobs],
            "next": jobs[-1].id if jobs and more else None,
        }

    @router.get("/indexes/{job_id}", responses=documented(404, 422))
    async def index_job(job_id: IdPath, _: Principal = Depends(auth.require)) -> dict[str, Any]:
        found = await service.index_job(job_id)
        if found is None:
            raise HTTPException(404, f"no index job {job_id}")
        return {
            **found.to_json(),
            "job": found.job,
            "logs": [e.to_json() for e in await logs.logs(job_id)],
        }

    @router.get("/uploads", responses=documented(422))
    async def uploads(
        repo: RepoQuery | None = None,
        state: State | None = None,
        after: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        _: Principal = Depends(auth.require),
    ) -> dict[str, Any]:
        rows = await store.uploads(repo=repo, state=state, limit=limit, after_id=after)
        return {
            "uploads": [u.to_json() for u in rows],
            "next": rows[-1].id if rows and len(rows) == limit else None,
        }

    @router.post("/events", status_code=204, responses=documented(400, 413, 422))
    async def events(body: EventsRequest, _: Principal = Depends(auth.require)) -> Response:
        try:
            await usage.record_many(body.usage_events())
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        return Response(status_code=204)

    @router.get("/ranking", responses=documented(400, 422))
    async def ranked(
        after: Annotated[str | None, Query(max_length=512, pattern=PRINTABLE)] = None,
        limit: Annotated[int, Query(ge=1, le=ranking.PAGE_MAX)] = 50,
        _: Principal = Depends(auth.require),
    ) -> dict[str, Any]:
        try:
            page = await ranking.ranking(service.db, limit, after)
        except ranking.BadCursor as exc:
            raise HTTPException(400, str(exc)) from exc
        return {
            "repositories": [
                {
                    "position": r.position,
                    "repo": r.repo_name,
                    "preciseWeek": r.precise_week,
                    "searchWeek": r.search_week,
                    "preciseRatio": round(r.precise_ratio, 4),
                    "lastQueuedAt": r.last_queued_at.isoformat() if r.last_queued_at else None,
                }
                for r in page.rows
            ],
            "next": page.next,
        }

    # Last: `{repo:path}` takes slashes, so these come after every fixed route above.
    async def navigate(
        kind: Literal["definitions", "references", "hover"],
        repo: str,
        commit: str,
        path: str,
        line: int,
        character: int,
    ) -> dict[str, Any]:
        checked_path(path)
        try:
            resolved = await service.resolve(repo, commit)
        except UnknownRepository as exc:
            raise missing(exc) from exc
        try:
            answer = await getattr(navigator, kind)(repo, resolved, path, line, character)
        except GitError as exc:  # the mirror broke under us: git's own words say how
            raise HTTPException(
                503, f"cannot read {repo} at {resolved[:12]}: {exc}; sync it and try again"
            ) from exc
        return answer_json(answer, hover=kind == "hover")

    def navigation_route(kind: Literal["definitions", "references", "hover"]) -> Any:
        async def route(
            repo: RepoPath,
            path: PathQuery,
            line: LineQuery,
            character: LineQuery,
            commit: RevQuery = "HEAD",
            _: Principal = Depends(auth.require),
        ) -> dict[str, Any]:
            return await navigate(kind, repo, commit, path, line, character)

        route.__name__ = kind
        return route

    # Last: `{repo:path}` would take any path that ends in one of these words.
    for kind in ("definitions", "references", "hover"):
        router.add_api_route(
            f"/{{repo:path}}/{kind}",
            navigation_route(kind),
            methods=["GET"],
            responses=documented(404, 422, 503),
        )

    return router
