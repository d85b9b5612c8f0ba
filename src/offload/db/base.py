"""The Database protocol: the few verbs the record queue and the jobs need from a driver."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from offload.db.url import DatabaseURL, Dialect

Row = dict[str, Any]
Params = Mapping[str, Any]


class DatabaseUnavailable(ConnectionError):
    """The database could not be reached; the message names it (without its password)."""


class SchemaMismatch(RuntimeError):
    """The database schema is not the one this offload release expects."""


class Transaction(Protocol):
    """Statements that commit together."""

    async def fetch(self, sql: str, params: Params | None = None) -> list[Row]:
        """Run one statement inside the transaction and return its rows."""
        ...


class Waiter(Protocol):
    """Wakes a consumer when work may have arrived on a channel."""

    def clear(self) -> None:
        """Forget wake-ups seen so far (call before looking for work)."""
        ...

    async def wait(self, timeout: float) -> bool:
        """Wait for a wake-up since the last clear(); False after `timeout` seconds."""
        ...

    def close(self) -> None:
        """Stop listening."""
        ...


class Database(Protocol):
    """One open database: SQLite or PostgreSQL behind the same verbs."""

    url: DatabaseURL

    @property
    def dialect(self) -> Dialect:
        """Which SQL the statements must be written in."""
        ...

    async def fetch(self, sql: str, params: Params | None = None) -> list[Row]:
        """Run one statement (a write takes the write lock first) and return its rows."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        """Run one statement for each parameter set, all in one transaction."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """A transaction that holds the write lock from its start."""
        ...

    async def notify(self, channel: str) -> None:
        """Wake every waiter on `channel`, in this process and in others where possible."""
        ...

    async def waiter(self, channel: str) -> Waiter:
        """A waiter for wake-ups on `channel`."""
        ...

    async def close(self) -> None:
        """Release connections and background listeners."""
        ...
