"""Schema versions: migrate a database to the newest revision, or refuse to run on a mismatch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from offload.db.base import DatabaseUnavailable, SchemaMismatch
from offload.db.url import DatabaseURL

MIGRATIONS = Path(__file__).parent / "migrations"
__all__ = ["SchemaMismatch", "SchemaStatus", "require_current", "status", "upgrade"]


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands against this release's migrations."""

    current: str | None
    head: str
    known: bool  # False when the database was migrated by a newer release

    @property
    def up_to_date(self) -> bool:
        """The database is at this release's newest revision."""
        return self.current == self.head


def alembic_config() -> Config:
    """The Alembic configuration of the migrations shipped in the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _status(conn: Connection) -> SchemaStatus:
    current = MigrationContext.configure(conn).get_current_revision()
    scripts = ScriptDirectory.from_config(alembic_config())
    known = current is None or current in {rev.revision for rev in scripts.walk_revisions()}
    return SchemaStatus(current=current, head=_head(), known=known)


def _upgrade(conn: Connection, target: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, target)


@asynccontextmanager
async def _connection(url: DatabaseURL, *, begin: bool) -> AsyncIterator[AsyncConnection]:
    """A SQLAlchemy connection for migrations; an unreachable database is DatabaseUnavailable."""
    if url.path is not None:
        url.path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url.sqlalchemy_url())
    try:
        try:
            conn = await engine.connect()
        except (DBAPIError, OSError) as exc:
            raise DatabaseUnavailable(f"cannot reach {url.redacted()}: {exc}") from exc
        try:
            if begin:
                async with conn.begin():
                    yield conn
            else:
                yield conn
        finally:
            await conn.close()
    finally:
        await engine.dispose()


async def status(url: DatabaseURL) -> SchemaStatus:
    """The schema revision of the database at `url`."""
    async with _connection(url, begin=False) as conn:
        return await conn.run_sync(_status)


async def upgrade(url: DatabaseURL, target: str = "head") -> SchemaStatus:
    """Migrate the database at `url` to `target` (the newest revision by default)."""
    before = await status(url)
    if not before.known:
        raise SchemaMismatch(too_new_message(before))
    async with _connection(url, begin=True) as conn:
        await conn.run_sync(_upgrade, target)
    return await status(url)


def too_new_message(found: SchemaStatus) -> str:
    """What to tell a user whose database was migrated by a newer offload."""
    return (
        f"the database schema is at revision {found.current}, which this offload release does not "
        f"know (its newest is {found.head}): the database was migrated by a newer offload; "
        "upgrade offload to run against it"
    )


async def require_current(url: DatabaseURL) -> SchemaStatus:
    """Refuse to run against a schema older or newer than this release's."""
    found = await status(url)
    if not found.known:
        raise SchemaMismatch(too_new_message(found))
    if not found.up_to_date:
        raise SchemaMismatch(
            f"the database schema is at revision {found.current or '(empty)'} but this offload "
            f"release needs {found.head}: run `offload migrate up` first"
        )
    return found
