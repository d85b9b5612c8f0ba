"""The batch changes pages: the list, a spec's execution (workspaces, their logs, outputs and
changes, retry), its preview (operations with rendered titles, bodies and diffs; apply) and a
batch change (burndown, changesets with their pull requests, close).

Who may see each: whoever may act in the namespace that owns the spec or batch change, and
site admins, as through /api/batches; anyone else gets "not found". Apply, retry and close
are forms with the session's CSRF token. Lists are read a page at a time by key
(batches/listing.py), so a batch change of 45,000 changesets reads as fast as one of ten.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from offload.batches.listing import BatchListing, diff_text
from offload.batches.service import BatchNotFound, BatchStateError
from offload.batches.store import BatchSpecRow
from offload.db.values import parse_time
from offload.identity.principal import Principal
from offload.web.charts import burndown_chart
from offload.web.diffview import parse_diff
from offload.web.pages import Pages
from offload.web.routes import WebServices
from offload.web.viewer import Viewer

PER_PAGE = 50
# How the built-in code host addresses its pull requests (repos/codehosts/builtin.py).
BUILTIN = "offload://"
# Operations per preview page: each carries its diff.
OPERATIONS_PER_PAGE = 20
# Lines of one diff a page shows; the rest is a link away.
DIFF_LINES = 400
WORKSPACE_STATES = (
    "pending",
    "queued",
    "processing",
    "completed",
    "errored",
    "failed",
    "canceled",
    "cached",
    "ignored",
    "skipped",
)
CHANGESET_STATUSES = (
    "unpublished",
    "processing",
    "draft",
    "open",
    "merged",
    "closed",
    "failed",
    "detached",
)
ACTIONS = (
    "create",
    "import",
    "push",
    "publish",
    "publish-draft",
    "undraft",
    "update",
    "reopen",
    "close",
    "detach",
    "none",
)
DONE = {
    "apply": "Applied: the changesets are being published; their states follow below.",
    "close": "Closing: the open pull requests of this batch change are being closed.",
    "retry": "The failed workspaces are queued again.",
    "retry-none": "No workspace had failed: nothing was queued again.",
}


def _key(value: str, limit: int = 4096) -> str:
    """A page key from the URL, bounded."""
    return value[:limit]


def _after(value: str) -> int:
    """An id key from the URL: 0 (the start) for anything that is not a small whole number."""
    return int(value) if value.isdigit() and len(value) < 19 else 0


def pull_link(url: str | None) -> str | None:
    """Where a changeset's pull request is read: the code host's page, or for the built-in
    host (`offload://REPO/pulls/N`) its page here. None for anything else (never a
    `javascript:` address a code host might return)."""
    if not url:
        return None
    if url.startswith(("https://", "http://")):
        return url
    if url.startswith(BUILTIN):
        repo, _, number = url[len(BUILTIN) :].rpartition("/pulls/")
        if repo and number.isdigit():
            return f"/repositories/{quote(repo)}/pulls/{number}"
    return None


def _duration(row: dict[str, Any]) -> float | None:
    started, finished = parse_time(row.get("started_at")), parse_time(row.get("finished_at"))
    if started is None:
        return None
    return ((finished or datetime.now(UTC)) - started).total_seconds()


def batches_router(pages: Pages, services: WebServices) -> APIRouter:
    """/batch-changes and /batch-specs."""
    router = APIRouter(include_in_schema=False)
    viewer, posted = Viewer(services.auth).require, Viewer(services.auth).posted
    batches = services.batches
    listing = BatchListing(batches)

    async def visible_spec(principal: Principal, rand_id: str) -> BatchSpecRow | None:
        # Another namespace's spec is not found rather than forbidden: no telling what exists.
        try:
            row = await batches.spec_row(rand_id[:64])
        except BatchNotFound:
            return None
        return row if principal.may_act_in(row.user_name) else None

    async def visible_change(
        principal: Principal, namespace: str, name: str
    ) -> dict[str, Any] | None:
        if not principal.may_act_in(namespace[:64]):
            return None
        return await batches.find_change(namespace[:64], name[:255])

    def no_spec(request: Request, principal: Principal, rand_id: str) -> Response:
        return pages.error(request, 404, f"No batch spec {rand_id[:64]!r}.", principal)

    def no_change(request: Request, principal: Principal, namespace: str, name: str) -> Response:
        return pages.error(
            request, 404, f"{namespace[:64]} has no batch change named {name[:255]!r}.", principal
        )

    @router.get("/batch-changes")
    async def batch_changes(
        request: Request, principal: Principal = Depends(viewer), namespace: str = ""
    ) -> Response:
        mine = principal.namespaces()
        if namespace and not principal.may_act_in(namespace[:64]):
            return pages.error(
                request, 404, f"No namespace {namespace[:64]!r} of yours.", principal
            )
        shown = [namespace[:64]] if namespace else mine
        changes = await batches.recent(shown, limit=PER_PAGE)
        counts = {int(c["id"]): await listing.status_counts(int(c["id"])) for c in changes}
        return pages.render(
            request,
            "batch_changes.html",
            principal,
            changes=changes,
            counts=counts,
            specs=await listing.specs(shown, limit=20),
            namespaces=mine,
            namespace=namespace[:64],
        )

    @router.get("/batch-changes/{namespace}/{name}")
    async def batch_change(
        request: Request,
        namespace: str,
        name: str,
        principal: Principal = Depends(viewer),
        status: str = "",
        after: str = "",
        did: str = "",
    ) -> Response:
        change = await visible_change(principal, namespace, name)
        if change is None:
            return no_change(request, principal, namespace, name)
        if status and status not in CHANGESET_STATUSES:
            return pages.error(request, 400, f"No changeset status {status[:32]!r}.", principal)
        change_id = int(change["id"])
        spec = await batches.store.spec(int(change["batch_spec_id"]))
        created = parse_time(change["created_at"]) or datetime.now(UTC)
        # Counted first: the list, read after it, is never older than the counts above it.
        summary = await listing.summary(change_id, created)
        rows = await listing.changesets(
            change_id, status=status or None, after=_after(after), limit=PER_PAGE + 1
        )
        return pages.render(
            request,
            "batch_change.html",
            principal,
            change=change,
            spec=spec,
            closed=change["closed_at"] is not None,
            counts=summary.counts,
            chart=burndown_chart(summary.burndown),
            burndown=summary.burndown,
            summary=summary,
            changesets=[{**c, "link": pull_link(c["external_url"])} for c in rows[:PER_PAGE]],
            more=rows[PER_PAGE - 1]["id"] if len(rows) > PER_PAGE else None,
            shown=status,
            statuses=CHANGESET_STATUSES,
            specs=await listing.specs_of(namespace[:64], name[:255], limit=10),
            done=DONE.get(did, ""),
        )

    @router.post("/batch-changes/{namespace}/{name}/close")
    async def close(request: Request, namespace: str, name: str) -> Response:
        principal, _ = await posted(request)
        change = await visible_change(principal, namespace, name)
        if change is None:
            return no_change(request, principal, namespace, name)
        if change["closed_at"] is not None:
            return pages.error(request, 409, f"Batch change {name!r} is closed already.", principal)
        await batches.close(namespace, name)
        await services.audit.by(principal, request, "batch.close", f"{namespace}/{name}")
        return RedirectResponse(f"/batch-changes/{namespace}/{name}?did=close", status_code=303)

    @router.get("/batch-specs/{rand_id}")
    async def execution(
        request: Request,
        rand_id: str,
        principal: Principal = Depends(viewer),
        state: str = "",
        after: str = "",
        did: str = "",
    ) -> Response:
        row = await visible_spec(principal, rand_id)
        if row is None:
            return no_spec(request, principal, rand_id)
        if state and state not in WORKSPACE_STATES:
            return pages.error(request, 400, f"No workspace state {state[:32]!r}.", principal)
        progress = await batches.progress(row.rand_id)
        rows = await listing.workspaces(
            row.id, state=state or None, after=_after(after), limit=PER_PAGE + 1
        )
        template = "_batch_progress.html" if request.headers.get("hx-request") else None
        return pages.render(
            request,
            template or "batch_execution.html",
            principal,
            spec=row,
            progress=progress,
            workspaces=[{**w, "duration": _duration(w)} for w in rows[:PER_PAGE]],
            more=rows[PER_PAGE - 1]["id"] if len(rows) > PER_PAGE else None,
            state=state,
            states=WORKSPACE_STATES,
            done=DONE.get(did, ""),
            change=await batches.find_change(row.user_name, row.name),
        )

    @router.get("/batch-specs/{rand_id}/workspaces/{workspace_id}")
    async def workspace(
        request: Request, rand_id: str, workspace_id: int, principal: Principal = Depends(viewer)
    ) -> Response:
        row = await visible_spec(principal, rand_id)
        found = (
            await listing.workspace(row, workspace_id)
            if row is not None and 0 < workspace_id < 2**63
            else None
        )
        if row is None or found is None:
            return pages.error(request, 404, f"No workspace {workspace_id} here.", principal)
        diffs = [
            (spec, parse_diff(diff_text(spec), max_lines=DIFF_LINES))
            for spec in found["changeset_specs"]
        ]
        return pages.render(
            request,
            "batch_workspace.html",
            principal,
            spec=row,
            w={**found, "duration": _duration(found)},
            diffs=diffs,
        )

    @router.post("/batch-specs/{rand_id}/retry")
    async def retry(request: Request, rand_id: str) -> Response:
        principal, form = await posted(request)
        row = await visible_spec(principal, rand_id)
        if row is None:
            return no_spec(request, principal, rand_id)
        repo = form.get("repo", "")[:255] or None
        try:
            again = await batches.retry(row.user_name, row.name, spec=row.rand_id, repo=repo)
        except BatchStateError as exc:
            return pages.error(request, 409, str(exc), principal)
        await services.audit.by(
            principal, request, "batch.retry", f"{row.user_name}/{row.name}", spec=row.rand_id
        )
        did = "retry" if again else "retry-none"
        return RedirectResponse(f"/batch-specs/{row.rand_id}?did={did}", status_code=303)

    @router.get("/batch-specs/{rand_id}/preview")
    async def preview(
        request: Request,
        rand_id: str,
        principal: Principal = Depends(viewer),
        action: str = "",
        after: str = "",
    ) -> Response:
        row = await visible_spec(principal, rand_id)
        if row is None:
            return no_spec(request, principal, rand_id)
        if action and action not in ACTIONS:
            return pages.error(request, 400, f"No operation {action[:32]!r}.", principal)
        progress = await batches.progress(row.rand_id)
        page = None
        diffs: dict[int, Any] = {}
        if progress["done"] and progress["resolution"] != "failed":
            page = await listing.operations(
                row, action=action or None, after=_key(after), limit=OPERATIONS_PER_PAGE
            )
            ids = [op.spec_id for op in page.operations if op.spec_id is not None]
            diffs = {
                spec.id: (spec, parse_diff(diff_text(spec), max_lines=DIFF_LINES))
                for spec in await listing.changeset_specs(ids)
            }
        return pages.render(
            request,
            "batch_preview.html",
            principal,
            spec=row,
            progress=progress,
            page=page,
            diffs=diffs,
            action=action,
            after=_key(after),
            change=await batches.find_change(row.user_name, row.name),
        )

    @router.post("/batch-specs/{rand_id}/apply")
    async def apply(request: Request, rand_id: str) -> Response:
        principal, _ = await posted(request)
        row = await visible_spec(principal, rand_id)
        if row is None:
            return no_spec(request, principal, rand_id)
        try:
            await batches.apply(row.rand_id)
        except (BatchStateError, BatchNotFound) as exc:
            return pages.error(request, 409, str(exc), principal)
        await services.audit.by(
            principal, request, "batch.apply", f"{row.user_name}/{row.name}", spec=row.rand_id
        )
        return RedirectResponse(
            f"/batch-changes/{row.user_name}/{row.name}?did=apply", status_code=303
        )

    return router
