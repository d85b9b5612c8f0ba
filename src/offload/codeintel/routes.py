"""HTTP routes of code intelligence: which index jobs a repository's commit gets, and why.

Who may call each: every signed-in user (the mirrored code and what it would index are the
site's, like repositories themselves).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from offload.api.errors import documented
from offload.api.inputs import LONG_NAME_MAX, PRINTABLE
from offload.codeintel.inference import Selection, select_jobs
from offload.codeintel.tree import GitTree
from offload.identity.authenticator import Authenticator
from offload.identity.principal import Principal
from offload.repos.mirror import GitError, Mirrors
from offload.repos.registry import RepoRegistry

# How the API names where a selection's jobs came from.
SOURCES = {
    "explicit": "configuration",
    "sourcegraph.yaml": "sourcegraph.yaml",
    "inference": "inferred",
}
RepoQuery = Annotated[str, Query(min_length=1, max_length=LONG_NAME_MAX, pattern=PRINTABLE)]
# A revision as git names one: a branch, a tag, a commit, `HEAD~2`.
RevQuery = Annotated[str, Query(min_length=1, max_length=LONG_NAME_MAX, pattern=PRINTABLE)]


def selection_json(repo: str, commit: str, selection: Selection) -> dict[str, Any]:
    """A commit's index jobs as the API shows them: each job's payload with its `why`."""
    errors = selection.errors.errors if selection.errors else []
    return {
        "repo": repo,
        "commit": commit,
        "source": SOURCES[selection.source],
        "jobs": [{**job.payload(), "why": job.why} for job in selection.jobs],
        "errors": [
            {"line": e.line, "column": e.column, "path": e.path, "message": e.message}
            for e in errors
        ],
        "notes": list(selection.notes),
    }


def codeintel_router(repos: RepoRegistry, mirrors: Mirrors, auth: Authenticator) -> APIRouter:
    """/api/codeintel."""
    router = APIRouter(prefix="/api/codeintel", responses=documented(401))

    @router.get("/infer", responses=documented(404, 422, 503))
    async def infer(
        repo: RepoQuery,
        commit: RevQuery = "HEAD",
        _: Principal = Depends(auth.require),
    ) -> dict[str, Any]:
        if await repos.get(repo) is None:
            raise HTTPException(
                404, f"no repository named {repo!r} is registered; see `offload repos list`"
            )
        try:
            resolved = await mirrors.resolve(repo, commit)
        except GitError as exc:  # registered, but its first mirror was never made
            raise HTTPException(404, str(exc)) from exc
        if resolved is None:
            raise HTTPException(
                404, f"repository {repo} has no revision {commit!r}; give a branch, tag or commit"
            )
        # No explicit configuration is stored yet: the repository's file or inference decides.
        try:
            selection = await select_jobs(None, GitTree(mirrors.path(repo), resolved))
        except GitError as exc:  # the mirror broke under us: git's own words say how
            raise HTTPException(
                503, f"cannot read {repo} at {resolved[:12]}: {exc}; sync it and try again"
            ) from exc
        return selection_json(repo, resolved, selection)

    return router
