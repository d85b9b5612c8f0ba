"""Organizations and their members (role `member` or `admin`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.identity.namespaces import check_name, require_free
from offload.identity.users import UnknownUser

Role = Literal["member", "admin"]
ROLES: tuple[Role, ...] = ("member", "admin")


class UnknownOrg(LookupError):
    """No organization of that name; the message names it."""


@dataclass(frozen=True)
class Member:
    """A user's membership of an organization."""

    username: str
    role: Role

    def to_json(self) -> dict[str, Any]:
        """The API's JSON form."""
        return {"username": self.username, "role": self.role}


class Orgs:
    """The organizations and organization_members tables."""

    def __init__(self, db: Database, *, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    async def create(self, name: str, *, display_name: str = "", admin: str | None = None) -> int:
        """A new organization (with `admin` as its first admin); its id."""
        check_name(name, "organization name")
        if len(display_name) > 256:
            raise ValueError("a display name is at most 256 characters")
        now = self.clock.now()
        async with self.db.transaction() as tx:
            await require_free(tx, name)
            rows = await tx.fetch(
                "INSERT INTO organizations (name, display_name, created_at)"
                " VALUES (:n, :d, :now) RETURNING id",
                {"n": name, "d": display_name, "now": now},
            )
            org_id = int(rows[0]["id"])
            if admin is not None:
                await tx.fetch(
                    "INSERT INTO organization_members (org_id, user_id, role, created_at)"
                    " SELECT :o, id, 'admin', :now FROM users WHERE username = :u",
                    {"o": org_id, "u": admin, "now": now},
                )
        return org_id

    async def _id(self, name: str) -> int:
        rows = await self.db.fetch("SELECT id FROM organizations WHERE name = :n", {"n": name})
        if not rows:
            raise UnknownOrg(f"no organization {name!r}; see `offload orgs list`")
        return int(rows[0]["id"])

    async def overview(self, *, names: list[str] | None = None) -> list[dict[str, Any]]:
        """Organizations by name (only `names` when given)."""
        rows = await self.db.fetch(
            "SELECT o.name, o.display_name, count(m.id) AS members FROM organizations o"
            " LEFT JOIN organization_members m ON m.org_id = o.id"
            " GROUP BY o.id, o.name, o.display_name ORDER BY o.name"
        )
        return [
            {"name": r["name"], "displayName": r["display_name"], "members": int(r["members"])}
            for r in rows
            if names is None or r["name"] in names
        ]

    async def members(self, name: str) -> list[Member]:
        """An organization's members by username."""
        org_id = await self._id(name)
        rows = await self.db.fetch(
            "SELECT u.username, m.role FROM organization_members m"
            " JOIN users u ON u.id = m.user_id WHERE m.org_id = :o ORDER BY u.username",
            {"o": org_id},
        )
        return [
            Member(str(r["username"]), "admin" if r["role"] == "admin" else "member") for r in rows
        ]

    async def set_member(self, name: str, username: str, role: Role) -> None:
        """Add `username` to the organization, or change their role."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        org_id = await self._id(name)
        rows = await self.db.fetch(
            "INSERT INTO organization_members (org_id, user_id, role, created_at)"
            " SELECT :o, id, :r, :now FROM users WHERE username = :u"
            " ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role RETURNING id",
            {"o": org_id, "u": username, "r": role, "now": self.clock.now()},
        )
        if not rows:
            raise UnknownUser(f"no user {username!r}; see `offload users list`")

    async def remove_member(self, name: str, username: str) -> bool:
        """Take `username` out of the organization; False if they were not in it."""
        org_id = await self._id(name)
        rows = await self.db.fetch(
            "DELETE FROM organization_members WHERE org_id = :o"
            " AND user_id IN (SELECT id FROM users WHERE username = :u) RETURNING id",
            {"o": org_id, "u": username},
        )
        return bool(rows)

    async def memberships(self, user_id: int) -> dict[str, Role]:
        """The organizations a user belongs to, with their role in each."""
        rows = await self.db.fetch(
            "SELECT o.name, m.role FROM organization_members m"
            " JOIN organizations o ON o.id = m.org_id WHERE m.user_id = :u",
            {"u": user_id},
        )
        return {str(r["name"]): "admin" if r["role"] == "admin" else "member" for r in rows}
