"""Which namespaces may use which executor queues, and give their jobs network access there.

Every namespace may use the open queues (OFFLOAD_OPEN_QUEUES: `default` and `batches` unless
set); site admins grant the others, and network access on any queue, namespace by namespace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.db.values import parse_time
from offload.identity.namespaces import resolve

Permission = Literal["use", "network"]
PERMISSIONS: tuple[Permission, ...] = ("use", "network")


class NotGranted(PermissionError):
    """A namespace asked for a queue or network access it was not granted; says who grants."""


@dataclass(frozen=True)
class Grant:
    """One grant."""

    queue: str
    namespace: str
    permission: Permission
    granted_by: str
    created_at: str

    def to_json(self) -> dict[str, Any]:
        """The API's JSON form."""
        return {
            "queue": self.queue,
            "namespace": self.namespace,
            "permission": self.permission,
            "grantedBy": self.granted_by,
            "createdAt": self.created_at,
        }


class QueueGrants:
    """The queue_grants table."""

    def __init__(
        self, db: Database, open_queues: Sequence[str], *, clock: Clock | None = None
    ) -> None:
        self.db = db
        self.open_queues = frozenset(open_queues)
        self.clock = clock or SystemClock()

    async def granted(self, queue: str, namespace: str, permission: Permission) -> bool:
        """Whether `namespace` holds `permission` on `queue`."""
        if permission == "use" and queue in self.open_queues:
            return True
        rows = await self.db.fetch(
            "SELECT 1 FROM queue_grants WHERE queue = :q AND namespace = :n AND permission = :p",
            {"q": queue, "n": namespace, "p": permission},
        )
        return bool(rows)

    async def require(self, queue: str, namespace: str, *, network: bool = False) -> None:
        """NotGranted unless `namespace` may use `queue` (and its network, if asked)."""
        if not await self.granted(queue, namespace, "use"):
            raise NotGranted(
                f"{namespace} may not use the {queue} queue; a site admin can allow it with "
                f"`offload queues grant {queue} {await self._option(namespace)}`"
            )
        if network and not await self.granted(queue, namespace, "network"):
            raise NotGranted(
                f"{namespace} may not give jobs network access on the {queue} queue; a site "
                f"admin can allow it with `offload queues grant {queue} "
                f"{await self._option(namespace)} --network`"
            )

    async def _option(self, namespace: str) -> str:
        found = await resolve(self.db, namespace)
        return f"--{'org' if found is not None and found.kind == 'org' else 'user'} {namespace}"

    async def grant(self, queue: str, namespace: str, permission: Permission, by: str) -> bool:
        """Grant `permission`; False if it was already granted."""
        if permission not in PERMISSIONS:
            raise ValueError(f"permission must be one of {', '.join(PERMISSIONS)}")
        rows = await self.db.fetch(
            "INSERT INTO queue_grants (queue, namespace, permission, granted_by, created_at)"
            " VALUES (:q, :n, :p, :by, :now) ON CONFLICT (queue, namespace, permission)"
            " DO NOTHING RETURNING id",
            {"q": queue, "n": namespace, "p": permission, "by": by, "now": self.clock.now()},
        )
        return bool(rows)

    async def revoke(self, queue: str, namespace: str, permission: Permission) -> bool:
        """Take a grant back; False if there was none."""
        rows = await self.db.fetch(
            "DELETE FROM queue_grants WHERE queue = :q AND namespace = :n AND permission = :p"
            " RETURNING id",
            {"q": queue, "n": namespace, "p": permission},
        )
        return bool(rows)

    async def list(self, queue: str | None = None) -> list[Grant]:
        """Every grant (of `queue`), by queue and namespace."""
        where = "WHERE queue = :q" if queue is not None else ""
        rows = await self.db.fetch(
            f"SELECT * FROM queue_grants {where} ORDER BY queue, namespace, permission",
            {"q": queue} if queue is not None else {},
        )
        return [
            Grant(
                queue=str(r["queue"]),
                namespace=str(r["namespace"]),
                permission="network" if r["permission"] == "network" else "use",
                granted_by=str(r["granted_by"]),
                created_at=(t.isoformat() if (t := parse_time(r["created_at"])) else ""),
            )
            for r in rows
        ]
