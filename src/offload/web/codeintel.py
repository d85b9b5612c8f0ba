"""Code intelligence pages: the ranking with index jobs and uploads by state, a repository's
status, configuration, index jobs and uploads, one index job with its logs, and a file view
whose symbols link to their definitions and references.

Who may do what follows the API (codeintel/routes.py): every signed-in user reads these pages
and asks for an index ("Index now"; jobs are deduplicated, so asking twice costs nothing);
replacing a repository's configuration is for site admins (403 for others), since it decides
what runs on the executors. Repository names hold slashes, so every route of a repository
puts its own part after `/-/`, and those routes come before the one that takes the whole rest
of the path as a name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from offload.api.inputs import LONG_NAME_MAX, IdPath, LongNamePath
from offload.codeintel import ranking
from offload.codeintel.config import MAX_CONFIG_BYTES, ConfigErrors
from offload.codeintel.documents import StoredDocument
from offload.codeintel.navigation import Answer, Location
from offload.codeintel.scip.model import is_definition
from offload.codeintel.service import UnknownRepository
from offload.codeintel.store import UploadRow
from offload.codeintel.tree import GitTree
from offload.codeintel.uploads.queue import SPEC as UPLOADS
from offload.identity.principal import Principal
from offload.queue.states import State
from offload.queue.store import SqlQueueStore
from offload.repos.mirror import GitError
from offload.web.pages import Pages
from offload.web.routes import WebServices
from offload.web.viewer import Viewer

RANKING_PER_PAGE = 50
JOBS_PER_PAGE = 25
UPLOADS_PER_PAGE = 25
# The file view shows files up to this size; a larger one is a link to nothing but a note.
FILE_MAX_BYTES = 1024 * 1024
# A NUL in the first bytes marks a file as binary, as git itself decides.
BINARY_PROBE = 8000
ONLY_ADMINS = "Only site admins change a repository's code intelligence configuration."


@dataclass(frozen=True)
class Segment:
    """A piece of a line: plain text, or a symbol's occurrence linked to its definitions."""

    text: str
    character: int | None = None  # 0-based start, for a symbol
    definition: bool = False


@dataclass(frozen=True)
class SourceLine:
    """A numbered line of the file view (1-based), cut into segments."""

    number: int
    segments: tuple[Segment, ...]


def source_lines(text: str, document: StoredDocument | None) -> list[SourceLine]:
    """`text` as numbered lines, each occurrence of `document` on one line a linked segment
    (the outermost where occurrences overlap)."""
    by_line: dict[int, list[tuple[int, int, bool]]] = {}
    if document is not None:
        for o in document.occurrences:
            if o.start_line == o.end_line and o.end_char > o.start_char:
                by_line.setdefault(o.start_line, []).append(
                    (o.start_char, o.end_char, is_definition(o.roles))
                )
    out = []
    for index, line in enumerate(text.splitlines()):
        segments: list[Segment] = []
        at = 0
        for start, end, definition in sorted(by_line.get(index, [])):
            if start < at or end > len(line):
                continue  # inside one already linked, or past the line's end
            if start > at:
                segments.append(Segment(line[at:start]))
            segments.append(Segment(line[start:end], start, definition))
            at = end
        if at < len(line) or not segments:
            segments.append(Segment(line[at:]))
        out.append(SourceLine(index + 1, tuple(segments)))
    return out


def checked_path(path: str) -> str | None:
    """Why `path` is not a file's path from the repository's root, or None if it is."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return (
            f"{path!r} is not a file's path from the repository's root, like src/main.py: "
            "no leading /, no empty, . or .. parts"
        )
    if any(ord(c) < 32 or c == "\x7f" for c in path) or len(path) > 4096:
        return "a file's path is at most 4096 characters, without control characters"
    return None


def keyset(value: int | None) -> int | None:
    """A page's `before` id from the URL, when it is one an id can be."""
    return value if value is not None and 0 < value < 2**63 else None


def covering(uploads: list[UploadRow], path: str) -> list[UploadRow]:
    """The uploads whose root holds `path`, deepest root first (as navigation reads them)."""

    def holds(root: str) -> bool:
        root = root.strip("/")
        return not root or root == "." or path.startswith(root + "/")

    return sorted((u for u in uploads if holds(u.root)), key=lambda u: -len(u.root.strip("/")))


def codeintel_pages_router(pages: Pages, services: WebServices) -> APIRouter:
    """/code-intelligence and the pages under it."""
    router = APIRouter(include_in_schema=False)
    who = Viewer(services.auth)
    service, store, navigator = services.codeintel, services.navigator.store, services.navigator
    registry = services.syncer.registry
    uploads_queue = SqlQueueStore(service.db, UPLOADS)

    def no_repo(request: Request, principal: Principal, name: str) -> Response:
        return pages.error(request, 404, f"No repository named {name!r} is registered.", principal)

    @router.get("/code-intelligence")
    async def overview(
        request: Request, principal: Principal = Depends(who.require), after: str = ""
    ) -> Response:
        try:
            page = await ranking.ranking(service.db, RANKING_PER_PAGE, after[:512] or None)
        except ranking.BadCursor as exc:
            return pages.error(request, 400, str(exc), principal)
        jobs, uploads = await service.store.counts(), await uploads_queue.counts()
        return pages.render(
            request,
            "codeintel_ranking.html",
            principal,
            ranked=page.rows,
            more=page.next,
            after=after,
            states=[s.value for s in State],
            jobs={s.value: jobs.get(s, 0) for s in State},
            uploads={s.value: uploads.get(s, 0) for s in State},
        )

    @router.get("/code-intelligence/indexes/{index_id}")
    async def index_job(
        request: Request, index_id: IdPath, principal: Principal = Depends(who.require)
    ) -> Response:
        found = await service.index_job(index_id)
        if found is None:
            return pages.error(request, 404, f"No index job {index_id}.", principal)
        upload = await store.upload(found.upload_id) if found.upload_id is not None else None
        return pages.render(
            request,
            "codeintel_index.html",
            principal,
            job=found,
            logs=await service.store.logs(index_id),
            upload=upload,
        )

    # -- a repository's routes after `/-/`, before the catch-all ------------------------------

    async def commit_of(
        request: Request, principal: Principal, repo: str, rev: str
    ) -> str | Response:
        """The full commit `rev` names (default: the head), or the error page saying why not."""
        if len(rev) > LONG_NAME_MAX or any(ord(c) < 33 for c in rev):
            return pages.error(request, 400, f"{rev[:80]!r} is not a revision.", principal)
        try:
            return await service.resolve(repo, rev or None)
        except UnknownRepository as exc:
            return pages.error(request, 404, f"{exc}.", principal)

    @router.get("/code-intelligence/{repo:path}/-/blob/{path:path}")
    async def blob(
        request: Request,
        repo: LongNamePath,
        path: str,
        principal: Principal = Depends(who.require),
        commit: str = "",
    ) -> Response:
        problem = checked_path(path)
        if problem is not None:
            return pages.error(request, 400, problem, principal)
        resolved = await commit_of(request, principal, repo, commit)
        if isinstance(resolved, Response):
            return resolved
        tree = GitTree(service.mirrors.path(repo), resolved)
        try:
            data = await tree.read(path, limit=FILE_MAX_BYTES + 1)
        except GitError as exc:
            return pages.error(request, 409, f"Cannot read {repo}: {exc}; sync it.", principal)
        if data is None:
            return pages.error(
                request, 404, f"{repo} has no file {path} at {resolved[:12]}.", principal
            )
        refused = ""
        if len(data) > FILE_MAX_BYTES:
            refused = f"This file is larger than {FILE_MAX_BYTES // 1024} KiB: not shown."
        elif b"\0" in data[:BINARY_PROBE]:
            refused = "This file is binary: not shown."
        document, upload = None, None
        for candidate in covering(await store.upload_for(repo, resolved), path):
            document = await store.document(candidate.id, path)
            if document is not None:
                upload = candidate
                break
        lines = [] if refused else source_lines(data.decode("utf-8", "replace"), document)
        return pages.render(
            request,
            "codeintel_blob.html",
            principal,
            repo=repo,
            file=path,
            commit=resolved,
            lines=lines,
            refused=refused,
            upload=upload,
        )

    async def navigate(
        request: Request, principal: Principal, kind: str, repo: str, fields: dict[str, str]
    ) -> Response:
        path, commit = fields["path"], fields["commit"]
        problem = checked_path(path)
        try:
            line, character = int(fields["line"]), int(fields["character"])
        except ValueError:
            problem = "line and character are 0-based numbers"
            line = character = 0
        if problem is None and not (0 <= line <= 10_000_000 and 0 <= character <= 10_000_000):
            problem = "line and character are 0-based numbers up to 10,000,000"
        if problem is not None:
            return pages.error(request, 400, problem, principal)
        resolved = await commit_of(request, principal, repo, commit)
        if isinstance(resolved, Response):
            return resolved
        try:
            if kind == "definitions":
                answer = await navigator.definitions(repo, resolved, path, line, character)
            else:
                answer = await navigator.references(repo, resolved, path, line, character)
            hover = await navigator.hover(repo, resolved, path, line, character)
        except GitError as exc:
            return pages.error(request, 409, f"Cannot read {repo}: {exc}; sync it.", principal)
        return pages.render(
            request,
            "codeintel_locations.html",
            principal,
            kind=kind,
            answer=answer,
            hover=hover.contents,
            places=places(answer),
            query={"commit": resolved, "path": path, "line": line, "character": character},
        )

    def nav_fields(commit: str, path: str, line: str, character: str) -> dict[str, str]:
        return {"commit": commit, "path": path, "line": line, "character": character}

    @router.get("/code-intelligence/{repo:path}/-/def")
    async def definitions(
        request: Request,
        repo: LongNamePath,
        principal: Principal = Depends(who.require),
        commit: str = "",
        path: str = "",
        line: str = "",
        character: str = "",
    ) -> Response:
        fields = nav_fields(commit, path, line, character)
        return await navigate(request, principal, "definitions", repo, fields)

    @router.get("/code-intelligence/{repo:path}/-/refs")
    async def references(
        request: Request,
        repo: LongNamePath,
        principal: Principal = Depends(who.require),
        commit: str = "",
        path: str = "",
        line: str = "",
        character: str = "",
    ) -> Response:
        fields = nav_fields(commit, path, line, character)
        return await navigate(request, principal, "references", repo, fields)

    async def repository(
        request: Request,
        principal: Principal,
        repo: str,
        *,
        status: int = 200,
        before: int | None = None,
        uploads_before: int | None = None,
        done: str = "",
        error: str = "",
        config_text: str | None = None,
        config_errors: list[dict[str, Any]] | None = None,
    ) -> Response:
        jobs = await service.index_jobs(repo=repo, limit=JOBS_PER_PAGE + 1, before=before)
        uploads = await store.uploads(
            repo=repo, limit=UPLOADS_PER_PAGE + 1, after_id=uploads_before
        )
        stored = await service.config(repo)
        return pages.render(
            request,
            "codeintel_repo.html",
            principal,
            status=status,
            repo=repo,
            state=await service.status(repo),
            config=stored,
            config_text=(stored or "") if config_text is None else config_text,
            config_errors=config_errors or [],
            jobs=jobs[:JOBS_PER_PAGE],
            jobs_more=jobs[JOBS_PER_PAGE - 1].id if len(jobs) > JOBS_PER_PAGE else None,
            uploads=uploads[:UPLOADS_PER_PAGE],
            uploads_more=(
                uploads[UPLOADS_PER_PAGE - 1].id if len(uploads) > UPLOADS_PER_PAGE else None
            ),
            before=before,
            uploads_before=uploads_before,
            done=done,
            error=error,
            config_max=MAX_CONFIG_BYTES,
        )

    @router.post("/code-intelligence/{repo:path}/-/index")
    async def index_now(request: Request, repo: LongNamePath) -> Response:
        principal, _ = await who.posted(request)
        if await registry.get(repo) is None:
            return no_repo(request, principal, repo)
        try:
            done = await service.queue(repo, manual=True, requested_by=principal.username)
        except (UnknownRepository, GitError) as exc:
            return await repository(request, principal, repo, status=409, error=f"{exc}.")
        await services.audit.by(principal, request, "codeintel.index", repo)
        queued = sum(1 for q in done.jobs if q.outcome in ("queued", "moved ahead"))
        if done.errors:
            error = f"The {done.source} of {repo} is not valid: no index job was queued."
            return await repository(request, principal, repo, status=422, error=error)
        if not done.jobs:
            message = f"No index job for {done.commit[:12]}: nothing to index was found."
        else:
            message = (
                f"Asked for {len(done.jobs)} index job(s) at {done.commit[:12]} "
                f"(from its {done.source}): {queued} queued ahead of scheduled ones, "
                f"{len(done.jobs) - queued} already there."
            )
        return await repository(request, principal, repo, done=message)

    @router.post("/code-intelligence/{repo:path}/-/config")
    async def set_config(request: Request, repo: LongNamePath) -> Response:
        principal, form = await who.posted(request, max_bytes=MAX_CONFIG_BYTES * 4)
        if not principal.site_admin:
            return pages.error(request, 403, ONLY_ADMINS, principal)
        if await registry.get(repo) is None:
            return no_repo(request, principal, repo)
        # Browsers send CRLF from a text area; the stored text reads like the file would.
        text = form.get("config", "").replace("\r\n", "\n")
        if len(text.encode()) > MAX_CONFIG_BYTES:
            error = f"A configuration is at most {MAX_CONFIG_BYTES // 1024} KiB."
            return await repository(
                request, principal, repo, status=413, error=error, config_text=text
            )
        try:
            count = await service.set_config(repo, text, by=principal.username)
        except ConfigErrors as exc:
            errors = [
                {"line": e.line, "column": e.column, "path": e.path, "message": e.message}
                for e in exc.errors
            ]
            return await repository(
                request,
                principal,
                repo,
                status=422,
                error="The configuration is not valid: nothing was stored.",
                config_text=text,
                config_errors=errors,
            )
        await services.audit.by(principal, request, "codeintel.config.set", repo)
        done = f"Stored the configuration of {repo}: {count} index job(s). Index now to use it."
        return await repository(request, principal, repo, done=done)

    @router.get("/code-intelligence/{repo:path}")
    async def repository_page(
        request: Request,
        repo: LongNamePath,
        principal: Principal = Depends(who.require),
        before: int | None = None,
        uploads_before: int | None = None,
    ) -> Response:
        if await registry.get(repo) is None:
            return no_repo(request, principal, repo)
        return await repository(
            request,
            principal,
            repo,
            before=keyset(before),
            uploads_before=keyset(uploads_before),
        )

    return router


@dataclass(frozen=True)
class Place:
    """A location as the definitions and references pages list it (1-based line)."""

    location: Location
    line: int
    href: str
    own: bool


def places(answer: Answer) -> list[Place]:
    """The answer's locations, each with the file view's link to its line."""
    out = []
    for loc in answer.locations:
        line = loc.range[0] + 1
        where = quote(f"{loc.repo}/-/blob/{loc.path}")
        href = f"/code-intelligence/{where}?{urlencode({'commit': loc.commit})}#L{line}"
        out.append(Place(loc, line, href, loc.repo == answer.repo))
    return out


__all__ = ["codeintel_pages_router", "places", "source_lines"]
