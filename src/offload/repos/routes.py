"""HTTP routes of the built-in code host's pull requests: list, show, merge, close."""

from __future__ import annotations

from typing import Any, cast

from fastapi import APIRouter, HTTPException

from offload.repos.codehosts.base import CodeHostError, PullRequestNotFound, PullRequestState
from offload.repos.commits import MergeConflict
from offload.repos.pulls import PullRequests, StoredPullRequest

STATES = ("open", "draft", "merged", "closed")


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
    }


def pulls_router(pulls: PullRequests) -> APIRouter:
    """/api/pulls."""
    router = APIRouter(prefix="/api/pulls")

    @router.get("")
    async def listing(repo: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        if state is not None and state not in STATES:
            raise HTTPException(400, f"state must be one of {', '.join(STATES)}")
        chosen = cast(PullRequestState | None, state)
        return [_json(pr) for pr in await pulls.store.list(repo=repo, state=chosen)]

    async def act(verb: str, repo: str, number: int) -> dict[str, Any]:
        try:
            if verb == "merge":
                pr = await pulls.merge(repo, number)
            elif verb == "close":
                pr = await pulls.close(repo, number)
            else:
                pr = await pulls.get(repo, number)
        except PullRequestNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except (CodeHostError, MergeConflict) as exc:
            raise HTTPException(409, str(exc)) from exc
        return _json(pr)

    @router.get("/{repo:path}/{number}")
    async def show(repo: str, number: int) -> dict[str, Any]:
        return await act("get", repo, number)

    @router.post("/{repo:path}/{number}/merge")
    async def merge(repo: str, number: int) -> dict[str, Any]:
        return await act("merge", repo, number)

    @router.post("/{repo:path}/{number}/close")
    async def close(repo: str, number: int) -> dict[str, Any]:
        return await act("close", repo, number)

    return router
