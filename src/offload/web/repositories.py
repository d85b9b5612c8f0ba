"""Repositories and the built-in code host's pull requests: the list with each one's sync
state, adding and syncing (site admins), a repository's page, its pull requests, one pull
request with its diff, merging and closing it.

Who may do what follows the API (repos/routes.py): every signed-in user reads repositories
and pull requests; adding and syncing is for site admins (403 for others); merging and closing
a pull request is for site admins and the namespace that opened it (403 for others). Names
hold slashes (`github.com/org/project`), so the routes that end in `/pulls...` or `/sync` come
before the one that takes the whole rest of the path as a repository's name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from offload.api.inputs import LONG_NAME_MAX, IdPath, LongNamePath
from offload.identity.principal import Principal
from offload.repos.codehosts.base import CodeHostError, PullRequestNotFound
from offload.repos.commits import MergeConflict
from offload.repos.pulls import LIVE, STATES, StoredPullRequest
from offload.repos.registry import (
    DuplicateRepo,
    Repo,
    RepoNameError,
    SourceError,
    UnknownRepo,
    is_local_path,
)
from offload.repos.syncer import SyncFailed, SyncOutcome
from offload.web.diffview import DiffView, parse_diff
from offload.web.pages import HEADERS, Pages
from offload.web.routes import WebServices
from offload.web.viewer import Viewer

REPOS_PER_PAGE = 50
PULLS_PER_PAGE = 50
SOURCE_MAX = 4096
# A pull request's page reads this much of its diff (the diff view then shows at most
# DIFF_LINES lines of it); its text link, this much.
PAGE_DIFF_BYTES = 4 * 1024 * 1024
TEXT_DIFF_BYTES = 32 * 1024 * 1024
DIFF_LINES = 5000
ONLY_ADMINS = "Only site admins add and sync repositories."


@dataclass(frozen=True)
class RepoRow:
    """A repository as the pages show it: its sync state in a word, and whether offload
    hosts its pull requests."""

    repo: Repo
    sync: str
    hosted: bool

    @classmethod
    def of(cls, repo: Repo) -> RepoRow:
        """The row of `repo`."""
        if repo.last_error is not None:
            sync = "failed"
        elif repo.last_synced_at is not None:
            sync = "synced"
        else:
            sync = "never synced"
        return cls(repo, sync, is_local_path(repo.source))


def sync_message(outcome: SyncOutcome) -> str:
    """What one sync did, in a sentence."""
    if outcome.error is not None:
        return f"Could not sync {outcome.name}: {outcome.error}"
    state = outcome.state
    where = (
        f"{state.default_branch} at {state.head_commit[:12]}"
        if state is not None and state.default_branch and state.head_commit
        else "an empty repository"
    )
    return f"Synced {outcome.name} in {outcome.seconds:.1f} s: {where}."


def may_change(principal: Principal, pr: StoredPullRequest) -> bool:
    """Whether `principal` may merge or close `pr`: the API's rule (pulls_router)."""
    return principal.site_admin or bool(pr.author and principal.may_act_in(pr.author))


def pull_path(pr: StoredPullRequest) -> str:
    """The page of a pull request."""
    return f"/repositories/{pr.repo_name}/pulls/{pr.number}"


def repositories_router(pages: Pages, services: WebServices) -> APIRouter:
    """/repositories, a repository's page and sync, its pull requests (merge, close)."""
    router = APIRouter(include_in_schema=False)
    who = Viewer(services.auth)
    syncer, pulls = services.syncer, services.pulls
    registry = syncer.registry

    async def listing(
        request: Request,
        principal: Principal,
        *,
        name: str = "",
        after: str = "",
        status: int = 200,
        done: str = "",
        error: str = "",
        failed: list[str] | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        found = await registry.page(after=after, contains=name, limit=REPOS_PER_PAGE + 1)
        shown = found[:REPOS_PER_PAGE]
        return pages.render(
            request,
            "repositories.html",
            principal,
            status=status,
            repos=[RepoRow.of(r) for r in shown],
            more=shown[-1].name if len(found) > REPOS_PER_PAGE else None,
            filters={"name": name},
            after=after,
            done=done,
            error=error,
            failed=failed or [],
            form=form or {"source": "", "name": ""},
        )

    async def repository(
        request: Request, principal: Principal, repo: Repo, *, done: str = "", error: str = ""
    ) -> Response:
        return pages.render(
            request,
            "repository.html",
            principal,
            row=RepoRow.of(repo),
            done=done,
            error=error,
        )

    def no_repo(request: Request, principal: Principal, name: str) -> Response:
        return pages.error(request, 404, f"No repository named {name!r} is registered.", principal)

    @router.get("/repositories")
    async def repositories(
        request: Request,
        principal: Principal = Depends(who.require),
        name: str = "",
        after: str = "",
    ) -> Response:
        return await listing(
            request, principal, name=name[:LONG_NAME_MAX], after=after[:LONG_NAME_MAX]
        )

    @router.post("/repositories")
    async def add(request: Request) -> Response:
        principal, form = await who.posted(request)
        if not principal.site_admin:
            return pages.error(request, 403, ONLY_ADMINS, principal)
        source, name = form.get("source", "").strip(), form.get("name", "").strip()
        fields = {"source": source[:SOURCE_MAX], "name": name[:LONG_NAME_MAX]}
        if len(source) > SOURCE_MAX or "\0" in source:
            status, error = 400, f"A source is at most {SOURCE_MAX} characters, without NUL."
            return await listing(request, principal, status=status, error=error, form=fields)
        if len(name) > LONG_NAME_MAX:
            status, error = 400, f"A name is at most {LONG_NAME_MAX} characters."
            return await listing(request, principal, status=status, error=error, form=fields)
        try:
            repo = await syncer.add(source, name=name or None)
        except (RepoNameError, SourceError, DuplicateRepo, SyncFailed) as exc:
            # The API's statuses: a bad name or source, a name taken, a source git cannot read.
            status = (
                409
                if isinstance(exc, DuplicateRepo)
                else 422
                if isinstance(exc, SyncFailed)
                else 400
            )
            return await listing(request, principal, status=status, error=str(exc), form=fields)
        await services.audit.by(principal, request, "repo.add", repo.name)
        head = (
            f"{repo.default_branch} at {repo.head_commit[:12]}"
            if repo.default_branch and repo.head_commit
            else "an empty repository"
        )
        done = f"Added {repo.name} from {repo.display_source}: {head}."
        return await listing(request, principal, done=done)

    @router.post("/repositories/sync")
    async def sync_all(request: Request) -> Response:
        principal, _ = await who.posted(request)
        if not principal.site_admin:
            return pages.error(request, 403, ONLY_ADMINS, principal)
        outcomes = await syncer.sync_all()
        failed = [sync_message(o) for o in outcomes if not o.ok]
        done = f"Synced {len(outcomes) - len(failed)} of {len(outcomes)} repositories."
        return await listing(request, principal, done=done, failed=failed)

    # -- pull requests (before the catch-all repository routes) ---------------------------

    async def pull_page(
        request: Request,
        principal: Principal,
        pr: StoredPullRequest,
        *,
        status: int = 200,
        done: str = "",
        error: str = "",
    ) -> Response:
        diff: DiffView | None = None
        diff_error = ""
        try:
            raw, cut = await pulls.diff(pr.repo_name, pr.number, max_bytes=PAGE_DIFF_BYTES)
        except CodeHostError as exc:
            diff_error = str(exc)
        else:
            diff = parse_diff(raw.decode("utf-8", errors="replace"), max_lines=DIFF_LINES)
            if cut:
                diff = dataclasses.replace(diff, truncated=True)
        return pages.render(
            request,
            "pull.html",
            principal,
            status=status,
            pr=pr,
            diff=diff,
            diff_error=diff_error,
            diff_bytes_cut=PAGE_DIFF_BYTES // (1024 * 1024) if diff is not None and cut else 0,
            may_change=may_change(principal, pr),
            mergeable=pr.state == "open",
            closable=pr.state in LIVE,
            done=done,
            error=error,
        )

    @router.get("/repositories/{repo:path}/pulls/{number}/diff.txt")
    async def pull_diff_text(
        request: Request,
        repo: LongNamePath,
        number: IdPath,
        principal: Principal = Depends(who.require),
    ) -> Response:
        try:
            raw, cut = await pulls.diff(repo, number, max_bytes=TEXT_DIFF_BYTES)
        except PullRequestNotFound as exc:
            return pages.error(request, 404, str(exc), principal)
        except CodeHostError as exc:
            return pages.error(request, 409, str(exc), principal)
        if cut:
            # A diff cut mid-way is no longer a patch: the last line says so, git-style.
            raw += f"\n\\ offload: the diff is cut at {TEXT_DIFF_BYTES} bytes\n".encode()
        return PlainTextResponse(
            raw.decode("utf-8", errors="replace"), headers={**HEADERS, "X-Diff-Cut": str(cut)}
        )

    @router.get("/repositories/{repo:path}/pulls/{number}")
    async def pull(
        request: Request,
        repo: LongNamePath,
        number: IdPath,
        principal: Principal = Depends(who.require),
        did: str = "",
    ) -> Response:
        try:
            pr = await pulls.get(repo, number)
        except CodeHostError as exc:  # not found, or a repository offload does not host
            return pages.error(request, 404, str(exc), principal)
        return await pull_page(request, principal, pr, done=done_message(did, pr))

    async def change(request: Request, repo: str, number: int, verb: str) -> Response:
        principal, _ = await who.posted(request)
        try:
            pr = await pulls.get(repo, number)
        except CodeHostError as exc:
            return pages.error(request, 404, str(exc), principal)
        if not may_change(principal, pr):
            return pages.error(
                request,
                403,
                f"Only site admins and {pr.author or 'its author'} may {verb} pull request "
                f"{pr.ref}.",
                principal,
            )
        try:
            pr = await (pulls.merge if verb == "merge" else pulls.close)(repo, number)
        except PullRequestNotFound as exc:
            return pages.error(request, 404, str(exc), principal)
        except (CodeHostError, MergeConflict) as exc:
            return await pull_page(request, principal, pr, status=409, error=str(exc))
        await services.audit.by(principal, request, f"pull.{verb}", f"{repo}#{number}")
        return RedirectResponse(f"{pull_path(pr)}?did={verb}", status_code=303)

    @router.post("/repositories/{repo:path}/pulls/{number}/merge")
    async def merge(request: Request, repo: LongNamePath, number: IdPath) -> Response:
        return await change(request, repo, number, "merge")

    @router.post("/repositories/{repo:path}/pulls/{number}/close")
    async def close(request: Request, repo: LongNamePath, number: IdPath) -> Response:
        return await change(request, repo, number, "close")

    @router.get("/repositories/{repo:path}/pulls")
    async def pull_list(
        request: Request,
        repo: LongNamePath,
        principal: Principal = Depends(who.require),
        state: str = "",
        before: int | None = None,
    ) -> Response:
        found = await registry.get(repo)
        if found is None:
            # A repository may be named `x/pulls`: its page, not x's pull requests.
            whole = await registry.get(f"{repo}/pulls")
            if whole is not None and not state and before is None:
                return await repository(request, principal, whole)
            return no_repo(request, principal, repo)
        if state and state not in STATES:
            return pages.error(
                request,
                400,
                f"No pull request state {state!r}: use {', '.join(STATES)}.",
                principal,
            )
        row = RepoRow.of(found)
        listed: Sequence[StoredPullRequest] = []
        error = ""
        try:
            await pulls.hosted(found.name)
        except CodeHostError as exc:  # NotHosted: its pull requests live on its host
            error = str(exc)
        else:
            listed = await pulls.store.page(
                found.name,
                next((s for s in STATES if s == state), None),
                before=before if before is not None and before > 0 else None,
                limit=PULLS_PER_PAGE + 1,
            )
        shown = listed[:PULLS_PER_PAGE]
        return pages.render(
            request,
            "pulls.html",
            principal,
            row=row,
            pulls=shown,
            more=shown[-1].number if len(listed) > PULLS_PER_PAGE else None,
            state=state,
            states=STATES,
            error=error,
        )

    # -- one repository (its name is the rest of the path) ------------------------------------

    @router.post("/repositories/{repo:path}/sync")
    async def sync_one(request: Request, repo: LongNamePath) -> Response:
        principal, form = await who.posted(request)
        if not principal.site_admin:
            return pages.error(request, 403, ONLY_ADMINS, principal)
        try:
            found = await registry.require(repo)
        except UnknownRepo:
            return no_repo(request, principal, repo)
        outcome = await syncer.sync(found)
        message = sync_message(outcome)
        done, error = (message, "") if outcome.ok else ("", message)
        if form.get("back") == "list":
            return await listing(request, principal, done=done, failed=[error] if error else None)
        found = await registry.get(repo) or found
        return await repository(request, principal, found, done=done, error=error)

    @router.get("/repositories/{repo:path}")
    async def repository_page(
        request: Request, repo: LongNamePath, principal: Principal = Depends(who.require)
    ) -> Response:
        found = await registry.get(repo)
        if found is None:
            return no_repo(request, principal, repo)
        return await repository(request, principal, found)

    return router


def done_message(did: str, pr: StoredPullRequest) -> str:
    """What the page says after its merge or close form, from the pull request's state now."""
    if did == "merge" and pr.state == "merged":
        commit = f" as {pr.merge_commit[:12]}" if pr.merge_commit else ""
        return f"Merged {pr.head_ref} into {pr.base_ref}{commit}."
    if did == "close" and pr.state == "closed":
        return "Closed without merging."
    if did in ("merge", "close"):
        return f"Pull request {pr.ref} is {pr.state}."
    return ""
