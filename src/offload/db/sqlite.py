"""SQLite backend: the stdlib driver on one thread of its own, WAL mode, one writer at a time."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from offload.db.base import DatabaseUnavailable, Params, Row, Waiter
from offload.db.url import DatabaseURL, Dialect
from offload.db.wakeups import Hub

T = TypeVar("T")

# How often an idle process looks for commits made by other processes: SQLite has no
# cross-process notification, and PRAGMA data_version is a cheap way to see one happened.
CROSS_PROCESS_POLL = 0.01
BUSY_TIMEOUT_MS = 60_000
_READS = ("SELECT", "PRAGMA", "EXPLAIN")


# Values the driver takes as they are. Checked by exact type first: bulk writes of tens of
# thousands of rows encode every value on the event loop.
_AS_IS = frozenset({str, int, float, bool, bytes, type(None)})


def encode(value: Any) -> Any:
    """A Python value as SQLite stores it (timestamps in SQLAlchemy's own text format)."""
    if type(value) in _AS_IS:
        return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return value


def _encode_params(params: Params | None) -> dict[str, Any]:
    return {key: encode(value) for key, value in (params or {}).items()}


def _is_write(sql: str) -> bool:
    return not sql.lstrip().upper().startswith(_READS)


class SqliteTransaction:
    """Statements run on the connection's thread inside BEGIN IMMEDIATE."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def fetch(self, sql: str, params: Params | None = None) -> list[Row]:
        """Run one statement inside the transaction and return its rows."""
        return await self._db._call(lambda conn: _rows(conn.execute(sql, _encode_params(params))))


def _rows(cursor: sqlite3.Cursor) -> list[Row]:
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class SqliteDatabase:
    """A SQLite file shared by every offload process on this machine."""

    def __init__(self, url: DatabaseURL) -> None:
        assert url.path is not None
        self.url = url
        self.path: Path = url.path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offload-sqlite")
        self._conn: sqlite3.Connection | None = None
        # One connection per process: this lock keeps coroutines from interleaving statements
        # of different transactions on it.
        self._lock = asyncio.Lock()
        self._hub = Hub()
        self._poller: asyncio.Task[None] | None = None

    @property
    def dialect(self) -> Dialect:
        """Which SQL the statements must be written in."""
        return "sqlite"

    async def open(self) -> None:
        """Open the file (creating its directory) and set the pragmas every connection needs."""

        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            return conn

        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(self._thread, connect)
        except (sqlite3.Error, OSError) as exc:
            raise DatabaseUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._conn is not None, "database is not open"
        conn = self._conn
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, conn)

    async def fetch(self, sql: str, params: Params | None = None) -> list[Row]:
        """Run one statement (a write takes the write lock first) and return its rows."""
        values = _encode_params(params)
        if not _is_write(sql):
            async with self._lock:
                return await self._call(lambda conn: _rows(conn.execute(sql, values)))

        def write(conn: sqlite3.Connection) -> list[Row]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = _rows(conn.execute(sql, values))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return rows

        async with self._lock:
            return await self._call(write)

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        """Run one statement for each parameter set, all in one transaction."""
        values = [_encode_params(row) for row in rows]

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, values)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        async with self._lock:
            await self._call(write)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        """A transaction that holds the write lock from its start."""
        async with self._lock:
            await self._call(lambda conn: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield SqliteTransaction(self)
            except BaseException:
                await self._call(lambda conn: conn.execute("ROLLBACK"))
                raise
            await self._call(lambda conn: conn.execute("COMMIT"))

    async def notify(self, channel: str) -> None:
        """Wake waiters in this process; other processes see the commit through polling."""
        self._hub.wake(channel)

    async def waiter(self, channel: str) -> Waiter:
        """A waiter for wake-ups on `channel`."""
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll_other_processes())
        return self._hub.waiter(channel)

    async def _poll_other_processes(self) -> None:
        last: int | None = None
        while True:
            await asyncio.sleep(CROSS_PROCESS_POLL)
            if not self._hub.channels():
                continue
            try:
                rows = await self.fetch("PRAGMA data_version")
            except sqlite3.Error:
                continue
            version = int(next(iter(rows[0].values())))
            if last is not None and version != last:
                self._hub.wake_all()
            last = version

    async def close(self) -> None:
        """Close the connection and stop the poller."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._thread, conn.close)
        self._thread.shutdown(wait=False)
