"""Migrations: empty -> head on both databases, and the result equals the table definitions."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from offload.db import schema
from offload.db.tables import metadata
from offload.db.url import DatabaseURL

BOTH = pytest.mark.parametrize("empty_db_url", ["sqlite", "postgresql"], indirect=True)


def _diff(conn: Connection) -> list[object]:
    return list(
        compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    )


@BOTH
async def test_empty_database_migrates_to_head_matching_the_tables(
    empty_db_url: DatabaseURL,
) -> None:
    before = await schema.status(empty_db_url)
    assert before.current is None and not before.up_to_date
    after = await schema.upgrade(empty_db_url)
    assert after.up_to_date and after.current == after.head
    engine = create_async_engine(empty_db_url.sqlalchemy_url())
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
    # Running it again is a no-op.
    assert (await schema.upgrade(empty_db_url)).current == after.head


@BOTH
async def test_older_schema_is_refused_with_the_command_to_run(empty_db_url: DatabaseURL) -> None:
    with pytest.raises(schema.SchemaMismatch, match="run `offload migrate up`"):
        await schema.require_current(empty_db_url)


@BOTH
async def test_newer_schema_is_refused_with_upgrade_advice(empty_db_url: DatabaseURL) -> None:
    await schema.upgrade(empty_db_url)
    engine = create_async_engine(empty_db_url.sqlalchemy_url())
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "UPDATE alembic_version SET version_num = '9999_from_the_future'"
            )
    finally:
        await engine.dispose()
    with pytest.raises(schema.SchemaMismatch, match="upgrade offload"):
        await schema.require_current(empty_db_url)
    with pytest.raises(schema.SchemaMismatch, match="newer offload"):
        await schema.upgrade(empty_db_url)
