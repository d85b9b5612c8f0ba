"""Site settings the server keeps in the database: generated once, shared by every process."""

from __future__ import annotations

from collections.abc import Callable

from offload.db.base import Database


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


async def setting_once(db: Database, key: str, make: Callable[[], str]) -> str:
    """The setting `key`, made with `make()` and stored the first time it is asked for."""
    value = await get_setting(db, key)
    if value:
        return value
    # Two servers starting at once: the first insert wins, both read the same value back.
    await db.fetch(
        "INSERT INTO site_config (key, value) VALUES (:key, :value) ON CONFLICT (key) DO NOTHING",
        {"key": key, "value": make()},
    )
    stored = await get_setting(db, key)
    assert stored is not None
    return stored
