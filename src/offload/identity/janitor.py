"""`identity.janitor`: deletes ended sessions, and audit and secret access entries older than
their retention."""

from __future__ import annotations

import logging

from offload.identity.audit import AuditLog
from offload.identity.sessions import Sessions
from offload.secrets.store import expire_accesses
from offload.worker.job import WorkerContext
from offload.worker.routine import Periodic, Routine

log = logging.getLogger(__name__)


async def sweep(sessions: Sessions, audit: AuditLog, context: WorkerContext) -> None:
    """One pass: ended sessions, then audit and secret access entries past
    OFFLOAD_AUDIT_RETENTION."""
    ended = await sessions.expire()
    before = context.clock.now() - context.settings.audit_retention
    dropped = await audit.expire(before) + await expire_accesses(context.db, before)
    if ended or dropped:
        log.info(
            "deleted %d ended session(s) and %d audit entr%s older than %s",
            ended,
            dropped,
            "y" if dropped == 1 else "ies",
            context.settings.audit_retention,
            extra={"sessions": ended, "audit": dropped},
        )


def build(context: WorkerContext) -> list[Routine]:
    """One routine."""
    sessions = Sessions(context.db, clock=context.clock)
    audit = AuditLog(context.db, clock=context.clock)
    return [
        Periodic(
            "identity.janitor",
            context.settings.janitor_interval,
            lambda: sweep(sessions, audit, context),
            sleep=context.sleep,
        )
    ]
