"""HTTP routes of executor queues and executors, for people (not for executors).

Who may call each: every signed-in user reads the queues' counts; site admins list, grant and
revoke queue grants, list executors, and read or replace the executor token.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from offload.api.errors import BODY, documented
from offload.api.inputs import VISIBLE_ASCII, NamePath, PlainName
from offload.dispatch.access import executor_token, set_executor_token
from offload.dispatch.grants import Permission, QueueGrants
from offload.dispatch.registry import ExecutorRegistry
from offload.identity.audit import AuditLog
from offload.identity.authenticator import Authenticator
from offload.identity.namespaces import resolve
from offload.identity.principal import Principal
from offload.queue.store import SqlQueueStore


class GrantBody(BaseModel):
    """The body of POST /api/queues/{queue}/grants."""

    model_config = ConfigDict(extra="forbid")

    namespace: PlainName = Field(max_length=64)
    permission: Permission = "use"


class TokenBody(BaseModel):
    """The body of PUT /api/executors/token."""

    model_config = ConfigDict(extra="forbid")

    # Sent in an HTTP header by every executor: visible ASCII only.
    token: str = Field(min_length=16, max_length=256, pattern=VISIBLE_ASCII)


def dispatch_router(
    stores: list[SqlQueueStore],
    executor_queue_names: list[str],
    grants: QueueGrants,
    registry: ExecutorRegistry,
    auth: Authenticator,
    audit: AuditLog,
    token_replaced: Callable[[], None] = lambda: None,
) -> APIRouter:
    """/api/queues and /api/executors."""
    router = APIRouter(prefix="/api", responses=documented(401))

    @router.get("/queues")
    async def queues(_: Principal = Depends(auth.require)) -> list[dict[str, Any]]:
        out = []
        for store in stores:
            age = await store.oldest_queued_age()
            out.append(
                {
                    "queue": store.spec.name,
                    "counts": {s.value: n for s, n in (await store.counts()).items()},
                    "oldest_queued_seconds": age.total_seconds() if age else None,
                }
            )
        return out

    @router.get("/queues/grants", responses=documented(403))
    async def list_grants(_: Principal = Depends(auth.require_site_admin)) -> dict[str, Any]:
        return {
            "open": sorted(grants.open_queues),
            "grants": [g.to_json() for g in await grants.list()],
        }

    def known(queue: str) -> None:
        if queue not in executor_queue_names:
            raise HTTPException(
                404,
                f"no executor queue {queue!r}; the queues are {', '.join(executor_queue_names)}",
            )

    @router.post("/queues/{queue}/grants", status_code=201, responses=documented(*BODY, 403, 404))
    async def grant(
        queue: NamePath,
        body: GrantBody,
        request: Request,
        principal: Principal = Depends(auth.require_site_admin),
    ) -> dict[str, Any]:
        known(queue)
        if await resolve(grants.db, body.namespace) is None:
            raise HTTPException(404, f"no user or organization {body.namespace!r}")
        added = await grants.grant(queue, body.namespace, body.permission, principal.username)
        await audit.by(
            principal,
            request,
            "queue.grant",
            f"{queue}/{body.namespace}",
            permission=body.permission,
        )
        return {"queue": queue, **body.model_dump(), "new": added}

    @router.delete(
        "/queues/{queue}/grants/{namespace}", status_code=204, responses=documented(403, 404, 422)
    )
    async def revoke(
        queue: NamePath,
        namespace: NamePath,
        request: Request,
        principal: Principal = Depends(auth.require_site_admin),
        permission: Permission = "use",
    ) -> None:
        known(queue)
        if not await grants.revoke(queue, namespace, permission):
            raise HTTPException(404, f"{namespace} holds no {permission} grant on {queue}")
        await audit.by(
            principal, request, "queue.revoke", f"{queue}/{namespace}", permission=permission
        )

    @router.get("/executors", responses=documented(403))
    async def executors(_: Principal = Depends(auth.require_site_admin)) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        return [
            {
                "hostname": e.hostname,
                "active": e.active(now),
                "queues": e.queues,
                "runtime": e.runtime,
                "version": e.executor_version,
                "git": e.git_version,
                "os": e.os,
                "architecture": e.architecture,
                "firstSeenAt": e.first_seen_at.isoformat(),
                "lastSeenAt": e.last_seen_at.isoformat(),
                # Its job limits (None: an executor that does not report them) and the jobs
                # the queues confirm it holds, by queue.
                "limits": e.limits,
                "runningJobs": e.running,
            }
            for e in await registry.list()
        ]

    @router.get("/executors/token", responses=documented(403))
    async def token(_: Principal = Depends(auth.require_site_admin)) -> dict[str, str]:
        return {"token": await executor_token(registry.db)}

    @router.put("/executors/token", status_code=204, responses=documented(*BODY, 403))
    async def replace_token(
        body: TokenBody, request: Request, principal: Principal = Depends(auth.require_site_admin)
    ) -> None:
        await set_executor_token(registry.db, body.token)
        # This server refuses the old token at once (others when their cache expires).
        token_replaced()
        await audit.by(principal, request, "executors.token")

    return router
