"""Personal access tokens: random, shown once, stored as sha256, scoped, optionally expiring."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.db.values import decode_json, parse_time
from offload.identity.principal import SCOPES, Scope

PREFIX = "offload_"
# last_used_at is written at most this often per token: a token used on every request must
# not turn every read into a write.
LAST_USED_EVERY = timedelta(minutes=1)


class TokenError(ValueError):
    """A token that cannot be created as asked; the message says why."""


def digest(value: str) -> str:
    """What is stored of a token: its sha256."""
    return hashlib.sha256(value.encode()).hexdigest()


def new_value() -> str:
    """A fresh token value; the prefix lets secret scanners recognize leaked ones."""
    return PREFIX + secrets.token_hex(20)


@dataclass(frozen=True)
class AccessToken:
    """A token as its owner sees it (never its value)."""

    id: int
    user_id: int
    note: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AccessToken:
        """A token from its row."""
        return cls(
            id=int(row["id"]),
            user_id=int(row["user_id"]),
            note=str(row["note"]),
            scopes=tuple(decode_json(row["scopes"])),
            created_at=parse_time(row["created_at"]) or datetime.min,
            expires_at=parse_time(row["expires_at"]),
            last_used_at=parse_time(row["last_used_at"]),
            revoked_at=parse_time(row["revoked_at"]),
        )

    def usable(self, now: datetime) -> bool:
        """Neither revoked nor expired."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def to_json(self) -> dict[str, Any]:
        """The API's JSON form."""
        return {
            "id": self.id,
            "note": self.note,
            "scopes": list(self.scopes),
            "createdAt": self.created_at.isoformat(),
            "expiresAt": self.expires_at.isoformat() if self.expires_at else None,
            "lastUsedAt": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked": self.revoked_at is not None,
        }


class AccessTokens:
    """The access_tokens table."""

    def __init__(self, db: Database, *, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    async def create(
        self,
        user_id: int,
        scopes: Sequence[str],
        *,
        note: str = "",
        expires_in: timedelta | None = None,
    ) -> tuple[AccessToken, str]:
        """A new token and its value (the only time the value is known)."""
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            raise TokenError(
                f"unknown scope {', '.join(unknown) or '(none given)'}; "
                f"scopes are {', '.join(SCOPES)}"
            )
        if len(note) > 256:
            raise TokenError("a token's note is at most 256 characters")
        if expires_in is not None and expires_in <= timedelta(0):
            raise TokenError("a token's expiry must be in the future")
        now = self.clock.now()
        value = new_value()
        rows = await self.db.fetch(
            "INSERT INTO access_tokens (user_id, value_sha256, note, scopes, created_at,"
            " expires_at) VALUES (:u, :h, :note, :scopes, :now, :exp) RETURNING *",
            {
                "u": user_id,
                "h": digest(value),
                "note": note,
                "scopes": list(dict.fromkeys(scopes)),
                "now": now,
                "exp": now + expires_in if expires_in is not None else None,
            },
        )
        return AccessToken.from_row(rows[0]), value

    async def list(self, user_id: int) -> list[AccessToken]:
        """A user's tokens, newest first (revoked ones included)."""
        rows = await self.db.fetch(
            "SELECT * FROM access_tokens WHERE user_id = :u ORDER BY id DESC", {"u": user_id}
        )
        return [AccessToken.from_row(r) for r in rows]

    async def get(self, token_id: int) -> AccessToken | None:
        """A token by id, or None."""
        rows = await self.db.fetch("SELECT * FROM access_tokens WHERE id = :i", {"i": token_id})
        return AccessToken.from_row(rows[0]) if rows else None

    async def revoke(self, token_id: int) -> bool:
        """Revoke a token; False if it was unknown or already revoked."""
        rows = await self.db.fetch(
            "UPDATE access_tokens SET revoked_at = :now WHERE id = :i AND revoked_at IS NULL"
            " RETURNING id",
            {"i": token_id, "now": self.clock.now()},
        )
        return bool(rows)

    async def lookup(self, value: str) -> tuple[AccessToken, Mapping[str, Any]] | None:
        """The usable token of `value` with its user's row, or None; notes its use."""
        if not value.startswith(PREFIX) or len(value) > 128:
            return None
        rows = await self.db.fetch(
            "SELECT t.id AS token_id, t.user_id, t.note, t.scopes, t.created_at AS token_created,"
            " t.expires_at, t.last_used_at, t.revoked_at, u.username, u.site_admin,"
            " u.disabled_at FROM access_tokens t JOIN users u ON u.id = t.user_id"
            " WHERE t.value_sha256 = :h",
            {"h": digest(value)},
        )
        if not rows:
            return None
        row = rows[0]
        token = AccessToken.from_row(
            {**row, "id": row["token_id"], "created_at": row["token_created"]}
        )
        now = self.clock.now()
        if not token.usable(now):
            return None
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_EVERY:
            await self.db.fetch(
                "UPDATE access_tokens SET last_used_at = :now WHERE id = :i",
                {"i": token.id, "now": now},
            )
        return token, row


__all__ = ["AccessToken", "AccessTokens", "Scope", "TokenError", "digest"]
