"""HTTP routes of secrets: their names, setting and deleting them, and which jobs used them.

Who may call each: the names of `global` secrets any signed-in user; a user's names that user
and site admins; an organization's its members and site admins. Setting or deleting a secret,
and reading its access log: global ones site admins; an organization's its admins and site
admins; a user's that user and site admins. A namespace the caller may not see is 404 whether
it exists or not; one they see but may not change is 403. No route returns a value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from offload.api.errors import BODY, documented
from offload.api.inputs import BeforeQuery, NamePath
from offload.identity.audit import AuditLog
from offload.identity.authenticator import Authenticator
from offload.identity.namespaces import resolve
from offload.identity.principal import Principal
from offload.secrets.store import GLOBAL, VALUE_MAX, Secrets, UnknownSecret, check_name

# How URLs and the CLI name the namespace of the site's own secrets (no user or org may take
# it: identity/namespaces.py reserves it).
GLOBAL_NAME = "global"
LIMIT_MAX = 1000


class SetSecret(BaseModel):
    """The body of PUT /api/secrets/{namespace}/{name}."""

    model_config = ConfigDict(extra="forbid")

    # Characters here; the store holds it to VALUE_MAX bytes of UTF-8.
    value: str = Field(min_length=1, max_length=VALUE_MAX)


def _time(at: datetime) -> str:
    return at.isoformat()


def secrets_router(secrets: Secrets, auth: Authenticator, audit: AuditLog) -> APIRouter:
    """/api/secrets."""
    router = APIRouter(prefix="/api/secrets", responses=documented(401))

    async def visible(principal: Principal, namespace: str) -> str:
        """The store's namespace of a URL's; 404 if the caller may not see it."""
        if namespace == GLOBAL_NAME:
            return GLOBAL
        if not principal.may_act_in(namespace):
            raise HTTPException(404, f"no user or organization {namespace!r}")
        mine = namespace == principal.username or namespace in principal.orgs
        if not mine and await resolve(secrets.db, namespace) is None:
            raise HTTPException(404, f"no user or organization {namespace!r}")
        return namespace

    async def changeable(principal: Principal, namespace: str) -> str:
        """The store's namespace of a URL's, if the caller may change its secrets."""
        found = await visible(principal, namespace)
        if found == GLOBAL and not principal.site_admin:
            raise HTTPException(403, "only site admins may change global secrets")
        if found in principal.orgs and not principal.may_admin_org(found):
            raise HTTPException(
                403, f"only admins of organization {found} may change or audit its secrets"
            )
        return found

    def named(name: str) -> str:
        try:
            return check_name(name)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc

    @router.get("/{namespace}", responses=documented(404, 422))
    async def list_secrets(
        namespace: NamePath, principal: Principal = Depends(auth.require)
    ) -> list[dict[str, Any]]:
        found = await visible(principal, namespace)
        return [
            {"name": s.name, "createdAt": _time(s.created_at), "updatedAt": _time(s.updated_at)}
            for s in await secrets.names(found)
        ]

    @router.put("/{namespace}/{name}", status_code=204, responses=documented(*BODY, 403, 404))
    async def set_secret(
        namespace: NamePath,
        name: str,
        body: SetSecret,
        request: Request,
        principal: Principal = Depends(auth.require),
    ) -> None:
        found = await changeable(principal, namespace)
        try:
            await secrets.set(found, named(name), body.value)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        await audit.by(principal, request, "secret.set", f"{namespace}/{name}")

    @router.delete("/{namespace}/{name}", status_code=204, responses=documented(400, 403, 404, 422))
    async def delete_secret(
        namespace: NamePath,
        name: str,
        request: Request,
        principal: Principal = Depends(auth.require),
    ) -> None:
        found = await changeable(principal, namespace)
        if not await secrets.delete(found, named(name)):
            raise HTTPException(404, f"no secret {name} in {namespace}")
        await audit.by(principal, request, "secret.delete", f"{namespace}/{name}")

    @router.get("/{namespace}/{name}/accesses", responses=documented(400, 403, 404, 422))
    async def accesses(
        namespace: NamePath,
        name: str,
        principal: Principal = Depends(auth.require),
        limit: Annotated[int, Query(ge=1, le=LIMIT_MAX)] = 100,
        before: BeforeQuery = None,
    ) -> list[dict[str, Any]]:
        found = await changeable(principal, namespace)
        try:
            uses = await secrets.accesses(found, named(name), limit=limit, before=before)
        except UnknownSecret as exc:
            raise HTTPException(404, f"no secret {name} in {namespace}") from exc
        return [
            {
                "id": a.id,
                "jobNamespace": a.job_namespace,
                "jobQueue": a.job_queue,
                "jobId": a.job_id,
                "at": _time(a.at),
            }
            for a in uses
        ]

    return router
