"""PostgreSQL backend: asyncpg pool for statements, one LISTEN connection for wake-ups."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import asyncpg

from offload.db.base import DatabaseUnavailable, Params, Row, Waiter
from offload.db.url import DatabaseURL, Dialect
from offload.db.wakeups import Hub

log = logging.getLogger(__name__)

CHANNEL = "offload_queue"
# Named parameters (:name) outside casts (::type), rewritten to asyncpg's $n.
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@lru_cache(maxsize=512)
def compile_named(sql: str) -> tuple[str, tuple[str, ...]]:
    """`sql` with :name parameters turned into $n, and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PARAM.sub(number, sql), tuple(names)


def _args(names: tuple[str, ...], params: Params | None) -> list[Any]:
    params = params or {}
    missing = [name for name in names if name not in params]
    if missing:
        raise KeyError(f"statement parameters missing: {', '.join(missing)}")
    return [params[name] for name in names]


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query: one round trip less per statement.

    asyncpg still rolls back an open transaction itself; offload's pooled connections never
    LISTEN (that has its own connection), take advisory locks, open cursors or SET anything.
    """


class PostgresTransaction:
    """Statements on one pooled connection inside a transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Params | None = None) -> list[Row]:
        """Run one statement inside the transaction and return its rows."""
        text, names = compile_named(sql)
        return [dict(r) for r in await self._conn.fetch(text, *_args(names, params))]


class PostgresDatabase:
    """A PostgreSQL database reached through a connection pool."""

    def __init__(self, url: DatabaseURL, *, pool_size: int = 10) -> None:
        self.url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._hub = Hub()
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    @property
    def dialect(self) -> Dialect:
        """Which SQL the statements must be written in."""
        return "postgresql"

    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "host": self.url.host or None,
            "port": self.url.port,
            "user": self.url.user or None,
            "password": self.url.password or None,
            "database": self.url.database,
            "timeout": 10,
        }

    async def open(self) -> None:
        """Create the pool; raise DatabaseUnavailable when the server cannot be reached."""
        try:
            self._pool = await asyncpg.create_pool(
                min_size=1,
                max_size=self._pool_size,
                init=_init_connection,
                reset=_keep_session,
                **self._connect_kwargs(),
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise DatabaseUnavailable(f"cannot reach {self.url.redacted()}: {exc}") from exc

    @property
    def pool(self) -> asyncpg.Pool:
        """The asyncpg pool (for the few places that need the driver itself)."""
        assert self._pool is not None, "database is not open"
        return self._pool

    async def fetch(self, sql: str, params: Params | None = None) -> list[Row]:
        """Run one statement and return its rows."""
        text, names = compile_named(sql)
        return [dict(r) for r in await self.pool.fetch(text, *_args(names, params))]

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        """Run one statement for each parameter set, all in one transaction."""
        text, names = compile_named(sql)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(text, [_args(names, row) for row in rows])

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """A transaction on one pooled connection."""
        async with self.pool.acquire() as conn, conn.transaction():
            yield PostgresTransaction(conn)

    async def notify(self, channel: str) -> None:
        """Wake every waiter on `channel`, in every process listening to this database."""
        await self.pool.execute("SELECT pg_notify($1, $2)", CHANNEL, channel)

    async def waiter(self, channel: str) -> Waiter:
        """A waiter for wake-ups on `channel` (starts the LISTEN connection on first use)."""
        waiter = self._hub.waiter(channel)
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen())
        await self._listening.wait()
        return waiter

    async def _listen(self) -> None:
        """Hold a LISTEN connection; reconnect after a drop, waking everyone for what was missed."""
        delay = 0.5
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(**self._connect_kwargs())
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("wake-up listener cannot reach %s: %s", self.url.redacted(), exc)
                self._listening.set()  # waiters fall back to their timeouts meanwhile
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
                continue
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(
                    CHANNEL, lambda _c, _pid, _ch, payload: self._hub.wake(payload)
                )
                delay = 0.5
                self._listening.set()
                self._hub.wake_all()
                await lost.wait()
            finally:
                await conn.close()

    async def close(self) -> None:
        """Close the pool and the listener."""
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
