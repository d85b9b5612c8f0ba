"""The audit log: who did what, when, and from where."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request

from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.db.values import decode_json, parse_time
from offload.identity.authenticator import client_address
from offload.identity.principal import Principal

# Longest text kept of any one field: the log must not become a place to store payloads.
FIELD_MAX = 512


class AuditLog:
    """The audit_log table."""

    def __init__(self, db: Database, *, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    async def record(
        self, actor: str, action: str, target: str = "", *, address: str = "", **detail: Any
    ) -> None:
        """Append one entry."""
        await self.db.fetch(
            "INSERT INTO audit_log (at, actor, action, target, address, detail)"
            " VALUES (:at, :actor, :action, :target, :address, :detail)",
            {
                "at": self.clock.now(),
                "actor": actor[:64],
                "action": action[:64],
                "target": target[:FIELD_MAX],
                "address": address[:FIELD_MAX],
                "detail": {k: str(v)[:FIELD_MAX] for k, v in detail.items()},
            },
        )

    async def by(
        self, principal: Principal, request: Request, action: str, target: str = "", **detail: Any
    ) -> None:
        """Append what `principal` did through `request` (its address is the caller's)."""
        address = client_address(request)
        await self.record(principal.username, action, target, address=address, **detail)

    async def list(
        self,
        *,
        before: int | None = None,
        limit: int = 100,
        actor: str | None = None,
        action: str | None = None,
    ) -> list[dict[str, Any]]:
        """Entries newest first, before id `before` (keyset pages), filtered by actor/action."""
        where = ["1 = 1"]
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            where.append("id < :before")
            params["before"] = before
        if actor is not None:
            where.append("actor = :actor")
            params["actor"] = actor
        if action is not None:
            where.append("action = :action")
            params["action"] = action
        rows = await self.db.fetch(
            f"SELECT * FROM audit_log WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT :limit",
            params,
        )
        return [
            {
                "id": int(r["id"]),
                "at": (parse_time(r["at"]) or datetime.min).isoformat(),
                "actor": r["actor"],
                "action": r["action"],
                "target": r["target"],
                "address": r["address"],
                "detail": decode_json(r["detail"]),
            }
            for r in rows
        ]

    async def expire(self, older_than: datetime) -> int:
        """Delete entries from before `older_than` (the janitor's retention); how many."""
        rows = await self.db.fetch(
            "DELETE FROM audit_log WHERE at < :t RETURNING id", {"t": older_than}
        )
        return len(rows)
