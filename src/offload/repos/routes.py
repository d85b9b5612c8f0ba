"""HTTP routes of repositories and of the built-in code host's pull requests.

Who may call each: every signed-in user lists and reads repositories and pull requests (the
mirrored code is the site's); adding, syncing and removing repositories is for site admins;
merging and closing a pull request needs write access to its repository, which is site admins'
and, for the pull requests it opened, the author namespace's (403 for anyone else).
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from offload.api.errors import BODY, documented
from offload.api.inputs import LONG_NAME_MAX, IdPath, LongNamePath, LongNameQuery, PlainName, Text
from offload.identity.audit import AuditLog
from offload.identity.authenticator import Authenticator
from offload.identity.principal import Principal
from offload.repos.codehosts.base import CodeHostError, PullRequestNotFound, PullRequestState
from offload.repos.commits import MergeConflict
from offload.repos.pulls import PullRequests, StoredPullRequest
from offload.repos.registry import DuplicateRepo, Repo, RepoNameError, SourceError, UnknownRepo
from offload.repos.syncer import Syncer, SyncFailed, SyncOutcome

STATES = ("open", "draft", "merged", "closed")
LIMIT_MAX = 1000


def _json(pr: StoredPullRequest) -> dict[str, Any]:
    return {
        "repo": pr.repo_name,
        "number": pr.number,
        "title": pr.title,
        "body": pr.body,
        "base": pr.base_ref,
        "head": pr.head_ref,
        "state": pr.state,
        "mergeCommit": pr.merge_commit,
        "author": pr.author,
    }


def pulls_router(pulls: PullRequests, auth: Authenticator, audit: AuditLog) -> APIRouter:
    """/api/pulls."""
    router = APIRouter(prefix="/api/pulls", responses=documented(401))

    @router.get("", responses=documented(400, 422))
    async def listing(
        _: Principal = Depends(auth.require),
        repo: LongNameQuery = None,
        state: str | None = None,
        limit: Annotated[int, Query(ge=1, le=LIMIT_MAX)] = LIMIT_MAX,
    ) -> list[dict[str, Any]]:
        if state is not None and state not in STATES:
            raise HTTPException(400, f"state must be one of {', '.join(STATES)}")
        chosen = cast(PullRequestState | None, state)
        found = await pulls.store.list(repo=repo, state=chosen, limit=limit)
        return [_json(pr) for pr in found]

    async def act(
        principal: Principal, request: Request, verb: str, repo: str, number: int
    ) -> dict[str, Any]:
        try:
            pr = await pulls.get(repo, number)
            if verb != "get":
                if not (principal.site_admin or (pr.author and principal.may_act_in(pr.author))):
                    raise HTTPException(
                        403,
                        f"only site admins and {pr.author or 'its author'} may {verb} "
                        f"pull request {repo}#{number}",
                    )
                pr = await (pulls.merge if verb == "merge" else pulls.close)(repo, number)
                await audit.by(principal, request, f"pull.{verb}", f"{repo}#{number}")
        except PullRequestNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except (CodeHostError, MergeConflict) as exc:
            raise HTTPException(409, str(exc)) from exc
        return _json(pr)

    @router.get("/{repo:path}/{number}", responses=documented(404, 422))
    async def show(
        repo: LongNamePath,
        number: IdPath,
        request: Request,
        principal: Principal = Depends(auth.require),
    ) -> dict[str, Any]:
        return await act(principal, request, "get", repo, number)

    @router.post("/{repo:path}/{number}/merge", responses=documented(403, 404, 409, 422))
    async def merge(
        repo: LongNamePath,
        number: IdPath,
        request: Request,
        principal: Principal = Depends(auth.require),
    ) -> dict[str, Any]:
        return await act(principal, request, "merge", repo, number)

    @router.post("/{repo:path}/{number}/close", responses=documented(403, 404, 409, 422))
    async def close(
        repo: LongNamePath,
        number: IdPath,
        request: Request,
        principal: Principal = Depends(auth.require),
    ) -> dict[str, Any]:
        return await act(principal, request, "close", repo, number)

    return router


class AddRepo(BaseModel):
    """The body of POST /api/repos."""

    model_config = ConfigDict(extra="forbid")

    source: Text = Field(max_length=4096)
    name: PlainName | None = Field(None, max_length=LONG_NAME_MAX)


class SyncRepos(BaseModel):
    """The body of POST /api/repos/sync."""

    model_config = ConfigDict(extra="forbid")

    names: list[Annotated[PlainName, Field(max_length=LONG_NAME_MAX)]] = Field(
        default_factory=list, max_length=10_000
    )


def repo_json(repo: Repo) -> dict[str, Any]:
    """A repository as the API shows it (its source without credentials)."""
    return {
        "name": repo.name,
        "source": repo.display_source,
        "defaultBranch": repo.default_branch,
        "headCommit": repo.head_commit,
        "lastSyncedAt": repo.last_synced_at.isoformat() if repo.last_synced_at else None,
        "lastError": repo.last_error,
    }


def outcome_json(outcome: SyncOutcome) -> dict[str, Any]:
    """One repository's sync as the API shows it."""
    state = outcome.state
    return {
        "name": outcome.name,
        "ok": outcome.ok,
        "defaultBranch": state.default_branch if state else None,
        "headCommit": state.head_commit if state else None,
        "seconds": outcome.seconds,
        "error": outcome.error,
    }


def repos_router(syncer: Syncer, auth: Authenticator, audit: AuditLog) -> APIRouter:
    """/api/repos."""
    router = APIRouter(prefix="/api/repos", responses=documented(401))

    @router.get("")
    async def listing(_: Principal = Depends(auth.require)) -> list[dict[str, Any]]:
        return [repo_json(r) for r in await syncer.registry.list()]

    # 422: the source cannot be mirrored (git's reason in the detail).
    @router.post("", status_code=201, responses=documented(*BODY, 403, 409))
    async def add(
        body: AddRepo, request: Request, principal: Principal = Depends(auth.require_site_admin)
    ) -> dict[str, Any]:
        try:
            repo = await syncer.add(body.source, name=body.name)
        except (RepoNameError, SourceError) as exc:
            raise HTTPException(400, str(exc)) from exc
        except DuplicateRepo as exc:
            raise HTTPException(409, str(exc)) from exc
        except SyncFailed as exc:
            raise HTTPException(422, str(exc)) from exc
        await audit.by(principal, request, "repo.add", repo.name)
        return {**repo_json(repo), "mirror": str(syncer.mirrors.path(repo.name))}

    @router.post("/sync", responses=documented(*BODY, 403, 404))
    async def sync(
        body: SyncRepos, principal: Principal = Depends(auth.require_site_admin)
    ) -> list[dict[str, Any]]:
        try:
            chosen = [await syncer.registry.require(n) for n in dict.fromkeys(body.names)]
        except UnknownRepo as exc:
            raise HTTPException(404, str(exc)) from exc
        if not body.names:
            chosen = await syncer.registry.list()
        return [outcome_json(o) for o in await syncer.sync_all(chosen)]

    @router.delete("/{name:path}", status_code=204, responses=documented(400, 403, 404, 422))
    async def remove(
        name: LongNamePath,
        request: Request,
        principal: Principal = Depends(auth.require_site_admin),
    ) -> None:
        try:
            removed = await syncer.remove(name)
        except RepoNameError as exc:
            raise HTTPException(400, str(exc)) from exc
        if not removed:
            raise HTTPException(404, f"no repository named {name!r} is registered")
        await audit.by(principal, request, "repo.remove", name)

    return router
