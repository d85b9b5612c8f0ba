"""Browser sessions: a random value in a signed, HttpOnly, SameSite cookie; a CSRF token each."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import timedelta

from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.db.site_config import setting_once
from offload.db.values import parse_time

COOKIE = "offload_session"
CSRF_HEADER = "X-CSRF-Token"
SIGNING_KEY = "identity.session_signing_key"


def _sign(key: bytes, value: str) -> str:
    mac = hmac.new(key, value.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


class Sessions:
    """The sessions table and the cookie's signature."""

    def __init__(
        self, db: Database, *, ttl: timedelta = timedelta(days=7), clock: Clock | None = None
    ) -> None:
        self.db = db
        self.ttl = ttl
        self.clock = clock or SystemClock()
        self._key: bytes | None = None

    async def _signing_key(self) -> bytes:
        if self._key is None:
            stored = await setting_once(self.db, SIGNING_KEY, lambda: secrets.token_hex(32))
            self._key = bytes.fromhex(stored)
        return self._key

    async def create(self, user_id: int, address: str) -> tuple[str, str]:
        """A new session of `user_id`: the cookie's value and the session's CSRF token."""
        value = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        now = self.clock.now()
        await self.db.fetch(
            "INSERT INTO sessions (user_id, value_sha256, csrf_token, address, created_at,"
            " expires_at) VALUES (:u, :h, :c, :a, :now, :exp)",
            {
                "u": user_id,
                "h": hashlib.sha256(value.encode()).hexdigest(),
                "c": csrf,
                "a": address[:256],
                "now": now,
                "exp": now + self.ttl,
            },
        )
        return f"{value}.{_sign(await self._signing_key(), value)}", csrf

    async def lookup(self, cookie: str) -> tuple[int, str] | None:
        """The user id and CSRF token of a live session's cookie, or None."""
        value, _, signature = cookie.partition(".")
        if not value or len(cookie) > 256:
            return None
        # A forged or tampered cookie is refused without reading the database.
        if not hmac.compare_digest(signature, _sign(await self._signing_key(), value)):
            return None
        rows = await self.db.fetch(
            "SELECT user_id, csrf_token, expires_at FROM sessions WHERE value_sha256 = :h",
            {"h": hashlib.sha256(value.encode()).hexdigest()},
        )
        if not rows:
            return None
        expires = parse_time(rows[0]["expires_at"])
        if expires is None or expires <= self.clock.now():
            return None
        return int(rows[0]["user_id"]), str(rows[0]["csrf_token"])

    async def end(self, cookie: str) -> None:
        """Sign a session out."""
        value = cookie.partition(".")[0]
        await self.db.fetch(
            "DELETE FROM sessions WHERE value_sha256 = :h",
            {"h": hashlib.sha256(value.encode()).hexdigest()},
        )

    async def end_all(self, user_id: int) -> None:
        """Sign a user out everywhere (disabled, or password changed)."""
        await self.db.fetch("DELETE FROM sessions WHERE user_id = :u", {"u": user_id})

    async def expire(self) -> int:
        """Delete ended sessions (the janitor); how many."""
        rows = await self.db.fetch(
            "DELETE FROM sessions WHERE expires_at <= :now RETURNING id", {"now": self.clock.now()}
        )
        return len(rows)
