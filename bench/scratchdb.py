"""Scratch PostgreSQL databases: one made fresh for each run, dropped when the run ends.

A benchmark names any database on a server where it may create and drop databases (the admin
URL); each run's database is created through it, on the same server, as
``offload_bench_[LABEL_]<10 hex digits>``. ``WITH (FORCE)`` drops it even when a process the
run started still holds a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from offload.db.url import DatabaseURL


async def connect(url: DatabaseURL | str, *, timeout: float = 10) -> asyncpg.Connection:
    """A connection to PostgreSQL at `url`: a DatabaseURL by its parts, a string as a DSN."""
    if isinstance(url, str):
        return await asyncpg.connect(url, timeout=timeout)
    return await asyncpg.connect(
        host=url.host,
        port=url.port,
        user=url.user or None,
        password=url.password or None,
        database=url.database,
        timeout=timeout,
    )


async def execute(admin: DatabaseURL | str, sql: str) -> None:
    """Run one statement on the database `admin` names, on a connection of its own."""
    conn = await connect(admin)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create(admin: DatabaseURL | str, label: str = "") -> str:
    """Create a new, empty database on the server of `admin`; its name."""
    name = f"offload_bench_{label}_" if label else "offload_bench_"
    name += uuid.uuid4().hex[:10]
    await execute(admin, f"CREATE DATABASE {name}")
    return name


async def drop(admin: DatabaseURL | str, name: str) -> None:
    """Drop database `name` on the server of `admin`, ending the connections it still has."""
    await execute(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def url_of(admin_url: str, name: str) -> str:
    """`admin_url` naming database `name` instead."""
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


@contextlib.contextmanager
def database(
    postgres_url: str | None, scratch: Path, *, source: str, keep: bool = False
) -> Iterator[DatabaseURL]:
    """A fresh database for one run: a SQLite file, or a PostgreSQL database dropped after.

    Without `postgres_url`, the file ``offload.db`` in `scratch`; else a scratch database on
    the server of `postgres_url` (`source` names the option it came from in parse errors),
    kept rather than dropped when `keep` is set.
    """
    if postgres_url is None:
        yield DatabaseURL.for_sqlite(scratch / "offload.db")
        return
    admin = DatabaseURL.parse(postgres_url, source=source)
    name = asyncio.run(create(admin))
    try:
        yield DatabaseURL.parse(url_of(postgres_url, name))
    finally:
        if keep:
            print(f"kept PostgreSQL database {name}")
        else:
            asyncio.run(drop(admin, name))
