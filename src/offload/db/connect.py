"""Opening a database: the right backend for the URL, retried with backoff while it is down."""

from __future__ import annotations

import logging

from offload.clock import Sleeper, real_sleep
from offload.db.base import Database, DatabaseUnavailable
from offload.db.postgres import PostgresDatabase
from offload.db.sqlite import SqliteDatabase
from offload.db.url import DatabaseURL

log = logging.getLogger(__name__)


async def open_database(url: DatabaseURL, *, pool_size: int = 10) -> Database:
    """Open `url` once; DatabaseUnavailable when it cannot be reached."""
    if url.dialect == "sqlite":
        sqlite = SqliteDatabase(url)
        await sqlite.open()
        return sqlite
    postgres = PostgresDatabase(url, pool_size=pool_size)
    await postgres.open()
    return postgres


async def connect(
    url: DatabaseURL,
    *,
    attempts: int | None = None,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
    pool_size: int = 10,
    sleep: Sleeper = real_sleep,
) -> Database:
    """Open `url`, retrying an unreachable database with exponential backoff.

    Each failed attempt is logged once, with the delay before the next; `attempts=None`
    retries for ever (a service waiting for its database), a number gives up after that many.
    """
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            return await open_database(url, pool_size=pool_size)
        except DatabaseUnavailable as exc:
            if attempts is not None and attempt >= attempts:
                raise
            log.warning(
                "database unavailable (attempt %d): %s; retrying in %.1fs",
                attempt,
                exc,
                delay,
                extra={"attempt": attempt, "retry_in": delay},
            )
            await sleep(delay)
            delay = min(delay * 2, max_delay)
