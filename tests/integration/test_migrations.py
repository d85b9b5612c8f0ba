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


@BOTH
async def test_step_cache_entries_written_before_0012_keep_their_results_and_know_no_job(
    empty_db_url: DatabaseURL,
) -> None:
    assert (await schema.upgrade(empty_db_url, "0011")).current == "0011"
    engine = create_async_engine(empty_db_url.sqlalchemy_url())
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO batch_step_cache (user_name, key, value, created_at) VALUES "
                "('alice', 'k1', '{\"diff\": \"x\"}', '2026-12-20 10:00:00+00:00')"
            )
        assert (await schema.upgrade(empty_db_url)).up_to_date
        async with engine.begin() as conn:
            rows = (
                await conn.exec_driver_sql(
                    "SELECT user_name, key, job_id FROM batch_step_cache ORDER BY id"
                )
            ).all()
            assert [tuple(r) for r in rows] == [("alice", "k1", None)]
            # The producing job of a new entry is kept (batches/store.py writes it).
            await conn.exec_driver_sql(
                "INSERT INTO batch_step_cache (user_name, key, value, created_at, job_id) VALUES "
                "('alice', 'k2', '{}', '2026-12-21 10:00:00+00:00', 42)"
            )
            found = (
                await conn.exec_driver_sql("SELECT job_id FROM batch_step_cache WHERE key = 'k2'")
            ).scalar()
            assert found == 42
    finally:
        await engine.dispose()
