"""Users: who they are, whether they are site admins, and whether they may sign in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.db.values import parse_time
from offload.identity import passwords
from offload.identity.namespaces import check_name, require_free


class UnknownUser(LookupError):
    """No user of that name; the message names it."""


@dataclass(frozen=True)
class User:
    """One user."""

    id: int
    username: str
    display_name: str
    email: str
    site_admin: bool
    disabled_at: datetime | None
    password_hash: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> User:
        """A user from its row."""
        return cls(
            id=int(row["id"]),
            username=str(row["username"]),
            display_name=str(row["display_name"]),
            email=str(row["email"]),
            site_admin=bool(row["site_admin"]),
            disabled_at=parse_time(row["disabled_at"]),
            password_hash=row["password_hash"],
            created_at=parse_time(row["created_at"]) or datetime.min,
        )

    @property
    def disabled(self) -> bool:
        """Whether the user may no longer sign in or use tokens."""
        return self.disabled_at is not None

    def to_json(self) -> dict[str, Any]:
        """The API's JSON form (never the password hash)."""
        return {
            "id": self.id,
            "username": self.username,
            "displayName": self.display_name,
            "email": self.email,
            "siteAdmin": self.site_admin,
            "disabled": self.disabled,
            "createdAt": self.created_at.isoformat(),
        }


class Users:
    """The users table."""

    def __init__(self, db: Database, *, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    async def create(
        self,
        username: str,
        *,
        display_name: str = "",
        email: str = "",
        site_admin: bool = False,
        password: str | None = None,
    ) -> User:
        """A new user; BadName or NameTaken when the name cannot be theirs."""
        check_name(username, "username")
        if len(display_name) > 256 or len(email) > 256:
            raise ValueError("display name and email are at most 256 characters")
        hashed = await passwords.hash_password(password) if password is not None else None
        now = self.clock.now()
        async with self.db.transaction() as tx:
            await require_free(tx, username)
            rows = await tx.fetch(
                "INSERT INTO users (username, display_name, email, site_admin, password_hash,"
                " created_at, updated_at) VALUES (:u, :d, :e, :a, :p, :now, :now) RETURNING *",
                {
                    "u": username,
                    "d": display_name,
                    "e": email,
                    "a": site_admin,
                    "p": hashed,
                    "now": now,
                },
            )
        return User.from_row(rows[0])

    async def get(self, username: str) -> User | None:
        """The user called `username`, or None."""
        rows = await self.db.fetch("SELECT * FROM users WHERE username = :u", {"u": username})
        return User.from_row(rows[0]) if rows else None

    async def require(self, username: str) -> User:
        """The user called `username`; UnknownUser otherwise."""
        user = await self.get(username)
        if user is None:
            raise UnknownUser(f"no user {username!r}; see `offload users list`")
        return user

    async def list(self, *, after: int = 0, limit: int = 100) -> list[User]:
        """Users by id, from after `after` (keyset pages)."""
        rows = await self.db.fetch(
            "SELECT * FROM users WHERE id > :after ORDER BY id LIMIT :limit",
            {"after": after, "limit": limit},
        )
        return [User.from_row(r) for r in rows]

    async def count(self) -> int:
        """How many users there are."""
        return int((await self.db.fetch("SELECT count(*) AS n FROM users"))[0]["n"])

    async def set_disabled(self, username: str, disabled: bool) -> User:
        """Disable (or enable again) a user: a disabled one's tokens and sessions stop working."""
        return await self._update(
            username, "disabled_at = :v", {"v": self.clock.now() if disabled else None}
        )

    async def set_site_admin(self, username: str, site_admin: bool) -> User:
        """Make a user a site admin, or no longer one."""
        return await self._update(username, "site_admin = :v", {"v": site_admin})

    async def set_password(self, username: str, password: str) -> User:
        """Set a user's password."""
        hashed = await passwords.hash_password(password)
        return await self._update(username, "password_hash = :v", {"v": hashed})

    async def _update(self, username: str, assignment: str, params: dict[str, Any]) -> User:
        rows = await self.db.fetch(
            f"UPDATE users SET {assignment}, updated_at = :now WHERE username = :u RETURNING *",
            {**params, "u": username, "now": self.clock.now()},
        )
        if not rows:
            raise UnknownUser(f"no user {username!r}; see `offload users list`")
        return User.from_row(rows[0])
