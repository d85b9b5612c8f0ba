"""The shared executor token: generated on first start, shown by `offload executors token`."""

from __future__ import annotations

import hmac
import secrets

from offload.db.base import Database

KEY = "executors.access_token"


async def get_setting(db: Database, key: str) -> str | None:
    """A site setting, or None."""
    rows = await db.fetch("SELECT value FROM site_config WHERE key = :key", {"key": key})
    return str(rows[0]["value"]) if rows else None


async def set_setting(db: Database, key: str, value: str) -> None:
    """Store a site setting."""
    await db.fetch(
        "INSERT INTO site_config (key, value) VALUES (:key, :value)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        {"key": key, "value": value},
    )


async def executor_token(db: Database) -> str:
    """The executor token, generated (and stored) the first time it is asked for."""
    token = await get_setting(db, KEY)
    if token:
        return token
    # Two servers starting at once: the first insert wins, both read the same value back.
    await db.fetch(
        "INSERT INTO site_config (key, value) VALUES (:key, :value) ON CONFLICT (key) DO NOTHING",
        {"key": KEY, "value": secrets.token_hex(24)},
    )
    stored = await get_setting(db, KEY)
    assert stored is not None
    return stored


def same_token(given: str, expected: str) -> bool:
    """Constant-time comparison of tokens."""
    return hmac.compare_digest(given.encode(), expected.encode())
