"""`identity.janitor` on both databases: ended sessions go, and audit and secret access entries
go once they are older than OFFLOAD_AUDIT_RETENTION; everything younger stays."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from offload.config import Settings
from offload.db.base import Database
from offload.identity.audit import AuditLog
from offload.identity.janitor import sweep
from offload.identity.sessions import Sessions
from offload.identity.users import Users
from offload.testing import FakeClock
from offload.worker.job import WorkerContext


async def count(db: Database, table: str) -> int:
    return int((await db.fetch(f"SELECT count(*) AS n FROM {table}"))[0]["n"])


async def test_the_janitor_keeps_what_is_young_and_deletes_what_is_old(
    db: Database, tmp_path: Path
) -> None:
    clock = FakeClock()
    settings = Settings(data_dir=tmp_path, audit_retention=timedelta(days=30))
    context = WorkerContext(db, settings, clock=clock)
    user = await Users(db, clock=clock).create("olive")
    sessions = Sessions(db, ttl=timedelta(days=7), clock=clock)
    audit = AuditLog(db, clock=clock)

    cookie, _ = await sessions.create(user.id, "127.0.0.1")
    await audit.record("olive", "sign-in")
    await db.fetch(
        "INSERT INTO secret_access_log (secret_id, secret_namespace, secret_name, job_namespace,"
        " job_queue, job_id, at) VALUES (1, 'olive', 'API_KEY', 'olive', 'default', 7, :at)",
        {"at": clock.now()},
    )
    clock.advance(timedelta(days=8))
    await sessions.create(user.id, "127.0.0.1")  # a second, younger session
    await audit.record("olive", "token.create")

    await sweep(sessions, audit, context)
    assert await sessions.lookup(cookie) is None
    assert await count(db, "sessions") == 1
    assert await count(db, "audit_log") == 2 and await count(db, "secret_access_log") == 1

    clock.advance(timedelta(days=25))  # the first entries are 33 days old, the second 25
    await sweep(sessions, audit, context)
    assert [e["action"] for e in await audit.list()] == ["token.create"]
    assert await count(db, "secret_access_log") == 0
    assert await count(db, "sessions") == 0
