"""Fixtures shared by every test: fresh, migrated SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from offload.db import schema
from offload.db.base import Database
from offload.db.connect import open_database
from offload.db.url import DatabaseURL

POSTGRES_URL = os.environ.get(
    "OFFLOAD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# `offload login` keeps the CLI's sign-in in the user's config directory: the tests' commands
# must neither read the developer's nor write one of their own there.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="offload-test-config-")
DIALECTS = ["sqlite", "postgresql"]


def _admin() -> DatabaseURL:
    return DatabaseURL.parse(POSTGRES_URL, source="OFFLOAD_TEST_POSTGRES_URL")


async def _admin_execute(sql: str) -> None:
    url = _admin()
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port,
        user=url.user or None,
        password=url.password or None,
        database=url.database,
        timeout=5,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _with_database(url: DatabaseURL, name: str) -> DatabaseURL:
    base = url.raw.rsplit("/", 1)[0]
    return DatabaseURL.parse(f"{base}/{name}")


@pytest.fixture(scope="session")
def passable_tmp() -> Iterator[Path | None]:
    """As root, a directory that other users may pass through (not list); None otherwise."""
    if os.geteuid() != 0:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="offload-tests-"))
    root.chmod(0o711)
    yield root
    # Workspace disks of executors that a test killed stay mounted (a next start would
    # remove them): unmount them, or their directories cannot go.
    with open("/proc/self/mountinfo") as mounts:
        points = [line.split()[4] for line in mounts]
    for point in sorted(p for p in points if p.startswith(f"{root}/"))[::-1]:
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tmp_path(tmp_path: Path, passable_tmp: Path | None, request: pytest.FixtureRequest) -> Path:
    """A fresh directory for the test. As root, one that other users may pass through: a
    root executor runs steps as an unprivileged uid, and bubblewrap reaches workspaces and
    images by path, but pytest keeps its own under pytest-of-root, 0700 (and every pytest
    session that starts puts that back)."""
    if passable_tmp is None:
        return tmp_path
    name = "".join(c if c.isalnum() else "_" for c in request.node.name)[:40]
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=passable_tmp))
    path.chmod(0o711)
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test clones (fast, and isolated per run)."""
    name = f"offload_tpl_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin_execute(f"CREATE DATABASE {name}"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    asyncio.run(schema.upgrade(_with_database(_admin(), name)))
    yield name
    asyncio.run(_admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies."""
    path = tmp_path_factory.mktemp("template") / "offload.db"
    asyncio.run(schema.upgrade(DatabaseURL.for_sqlite(path)))
    return path


@pytest.fixture(params=DIALECTS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseURL]:
    """A fresh, migrated database of each dialect."""
    if request.param == "sqlite":
        path = tmp_path / "offload.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield DatabaseURL.for_sqlite(path)
        return
    template = request.getfixturevalue("postgres_template")
    name = f"offload_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_execute(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY"))
    yield _with_database(_admin(), name)
    asyncio.run(_admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseURL]:
    """An empty (unmigrated) database; parametrize indirectly with 'sqlite' or 'postgresql'."""
    if request.param == "sqlite":
        yield DatabaseURL.for_sqlite(tmp_path / "empty.db")
        return
    request.getfixturevalue("postgres_template")  # fails or skips when PostgreSQL is down
    name = f"offload_e_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_execute(f"CREATE DATABASE {name}"))
    yield _with_database(_admin(), name)
    asyncio.run(_admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
async def db(db_url: DatabaseURL) -> AsyncIterator[Database]:
    """An open connection to a fresh database of each dialect."""
    database = await open_database(db_url)
    yield database
    await database.close()
