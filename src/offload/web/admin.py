"""Site administration (site admins only; others get a 403 page): the overview at `/admin`,
queue grants, the audit log and the versions of every process. Users and organizations have
their own modules (web/users.py, web/orgs.py).

Every action does what the API's route does (dispatch/routes.py), with the same audit entry;
a posted form carries the session's CSRF token and answers with a redirect to the page that
says what happened.
"""

from __future__ import annotations

import platform
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from offload import __version__
from offload.dispatch.grants import PERMISSIONS, Permission
from offload.identity.namespaces import resolve
from offload.identity.principal import Principal
from offload.web.pages import Pages
from offload.web.routes import WebServices
from offload.web.viewer import Viewer
from offload.worker.heartbeat import Workers, git_version

ONLY_ADMINS = "Only site admins administer the site."
AUDIT_PER_PAGE = 50
# The longest actor or action the audit log keeps (identity/audit.py).
AUDIT_FIELD_MAX = 64
NAMESPACE_MAX = 64


@dataclass(frozen=True)
class VersionRow:
    """One process in the versions table."""

    kind: str
    name: str
    version: str
    git: str
    os: str
    architecture: str
    # None: this server, which is answering; else whether its heartbeats are recent.
    active: bool | None
    last_seen_at: datetime | None
    detail: str = ""

    @property
    def differs(self) -> bool:
        """Whether it runs another release than this server (a version it reported)."""
        return bool(self.version) and self.version != __version__


class ServerFacts:
    """What this server says of itself in the versions table (git asked once per process)."""

    def __init__(self) -> None:
        self.hostname = socket.gethostname()
        self._git: str | None = None

    async def row(self) -> VersionRow:
        """This server's row."""
        if self._git is None:
            self._git = await git_version()
        return VersionRow(
            kind="server",
            name=self.hostname,
            version=__version__,
            git=self._git,
            os=platform.system().lower(),
            architecture=platform.machine(),
            active=None,
            last_seen_at=None,
            detail="this server",
        )


def printable(value: str, limit: int) -> bool:
    """Whether a filter's value can be an audit log's actor or action (or a name)."""
    return len(value) <= limit and value.isprintable()


def admin_router(pages: Pages, services: WebServices) -> APIRouter:
    """/admin, /admin/queues (with its grant and revoke forms), /admin/audit, /admin/versions."""
    router = APIRouter(include_in_schema=False)
    who = Viewer(services.auth)
    grants, audit = services.grants, services.audit
    workers = Workers(services.registry.db)
    server = ServerFacts()
    executor_queues = list(services.dispatcher.queues)

    def refused(request: Request, principal: Principal) -> Response:
        return pages.error(request, 403, ONLY_ADMINS, principal)

    async def version_rows() -> list[VersionRow]:
        now = datetime.now(UTC)
        rows = [await server.row()]
        for w in await workers.list():
            rows.append(
                VersionRow(
                    kind="worker",
                    name=w.hostname,
                    version=w.version,
                    git=w.git_version,
                    os=w.os,
                    architecture=w.architecture,
                    active=w.active(now),
                    last_seen_at=w.last_seen_at,
                    detail=", ".join(w.jobs),
                )
            )
        for e in await services.registry.list():
            rows.append(
                VersionRow(
                    kind="executor",
                    name=e.hostname,
                    version=e.executor_version,
                    git=e.git_version,
                    os=e.os,
                    architecture=e.architecture,
                    active=e.active(now),
                    last_seen_at=e.last_seen_at,
                    detail=", ".join(e.queues),
                )
            )
        return rows

    @router.get("/admin")
    async def overview(request: Request, principal: Principal = Depends(who.require)) -> Response:
        if not principal.site_admin:
            return refused(request, principal)
        versions = await version_rows()
        return pages.render(
            request,
            "admin.html",
            principal,
            users=await services.auth.users.count(),
            orgs=len(await services.auth.orgs.overview()),
            grants=len(await grants.list()),
            processes=len(versions),
            differing=sum(1 for row in versions if row.differs),
            workers=sum(1 for row in versions if row.kind == "worker"),
        )

    @router.get("/admin/versions")
    async def versions(request: Request, principal: Principal = Depends(who.require)) -> Response:
        if not principal.site_admin:
            return refused(request, principal)
        rows = await version_rows()
        return pages.render(
            request,
            "admin_versions.html",
            principal,
            rows=rows,
            now=datetime.now(UTC),
            server_version=__version__,
            workers=[r for r in rows if r.kind == "worker"],
        )

    async def grants_page(
        request: Request,
        principal: Principal,
        *,
        status: int = 200,
        done: str = "",
        error: str = "",
        form: dict[str, str] | None = None,
    ) -> Response:
        return pages.render(
            request,
            "admin_queues.html",
            principal,
            status=status,
            queues=executor_queues,
            open=sorted(grants.open_queues),
            grants=await grants.list(),
            permissions=PERMISSIONS,
            done=done,
            error=error,
            form=form or {},
        )

    @router.get("/admin/queues")
    async def queues(
        request: Request,
        principal: Principal = Depends(who.require),
        did: str = "",
        queue: str = "",
        namespace: str = "",
        permission: str = "use",
    ) -> Response:
        if not principal.site_admin:
            return refused(request, principal)
        held = {(g.queue, g.namespace, g.permission) for g in await grants.list()}
        done = ""
        # Said only when true: the URL is anyone's to write.
        if did == "grant" and (queue, namespace, permission) in held:
            done = f"{namespace} holds the {permission} grant on the {queue} queue."
        elif did == "revoke" and namespace and (queue, namespace, permission) not in held:
            done = f"{namespace} no longer holds the {permission} grant on the {queue} queue."
        return await grants_page(request, principal, done=done[:300])

    def grant_fields(form: dict[str, str]) -> tuple[str, str, Permission]:
        """The queue, namespace and permission of a grant form; ValueError saying what is
        wrong (LookupError for a queue that does not exist)."""
        queue, namespace = form.get("queue", ""), form.get("namespace", "").strip()
        permission = form.get("permission", "use")
        if queue not in executor_queues:
            raise LookupError(
                f"No executor queue {queue[:64]!r}; the queues are {', '.join(executor_queues)}."
            )
        if permission not in PERMISSIONS:
            raise ValueError(f"A permission is one of {', '.join(PERMISSIONS)}.")
        if not namespace or not printable(namespace, NAMESPACE_MAX):
            raise ValueError("Name the user or organization the grant is for.")
        return queue, namespace, "network" if permission == "network" else "use"

    def grants_url(did: str, queue: str, namespace: str, permission: str) -> str:
        query = {"did": did, "queue": queue, "namespace": namespace, "permission": permission}
        return "/admin/queues?" + urlencode(query)

    @router.post("/admin/queues/grants")
    async def grant(request: Request) -> Response:
        principal, form = await who.posted(request)
        if not principal.site_admin:
            return refused(request, principal)
        try:
            queue, namespace, permission = grant_fields(form)
            if await resolve(grants.db, namespace) is None:
                raise LookupError(f"No user or organization {namespace!r}.")
        except LookupError as exc:
            return await grants_page(request, principal, status=404, error=str(exc), form=form)
        except ValueError as exc:
            return await grants_page(request, principal, status=400, error=str(exc), form=form)
        await grants.grant(queue, namespace, permission, principal.username)
        await audit.by(
            principal, request, "queue.grant", f"{queue}/{namespace}", permission=permission
        )
        return RedirectResponse(grants_url("grant", queue, namespace, permission), 303)

    @router.post("/admin/queues/grants/revoke")
    async def revoke(request: Request) -> Response:
        principal, form = await who.posted(request)
        if not principal.site_admin:
            return refused(request, principal)
        try:
            queue, namespace, permission = grant_fields(form)
            if not await grants.revoke(queue, namespace, permission):
                raise LookupError(f"{namespace} holds no {permission} grant on {queue}.")
        except LookupError as exc:
            return await grants_page(request, principal, status=404, error=str(exc))
        except ValueError as exc:
            return await grants_page(request, principal, status=400, error=str(exc))
        await audit.by(
            principal, request, "queue.revoke", f"{queue}/{namespace}", permission=permission
        )
        return RedirectResponse(grants_url("revoke", queue, namespace, permission), 303)

    @router.get("/admin/audit")
    async def audit_log(
        request: Request,
        principal: Principal = Depends(who.require),
        actor: str = "",
        action: str = "",
        before: int | None = None,
    ) -> Response:
        if not principal.site_admin:
            return refused(request, principal)
        for field, value in (("actor", actor), ("action", action)):
            if not printable(value, AUDIT_FIELD_MAX):
                return pages.error(
                    request,
                    400,
                    f"An {field} filter is at most {AUDIT_FIELD_MAX} printable characters.",
                    principal,
                )
        older = before if before is not None and 0 < before < 2**63 else None
        entries = await audit.list(
            before=older, limit=AUDIT_PER_PAGE + 1, actor=actor or None, action=action or None
        )
        shown: list[dict[str, Any]] = entries[:AUDIT_PER_PAGE]
        filters = {"actor": actor, "action": action}
        return pages.render(
            request,
            "admin_audit.html",
            principal,
            entries=shown,
            filters=filters,
            more=shown[-1]["id"] if len(entries) > AUDIT_PER_PAGE else None,
            first_page=older is None,
            query=urlencode({k: v for k, v in filters.items() if v}),
        )

    return router
