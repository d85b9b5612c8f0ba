"""`batches.spec-expirer`: deletes batch specs that were previewed but never applied.

Every `offload batch preview` stores a spec with its workspaces, jobs, logs and changeset
specs: tens of thousands of rows for a large batch change. A spec nobody applied within
OFFLOAD_BATCHES_SPEC_TTL (7 days) goes, with all of that. Applied specs stay (their batch
change's changesets point at their changeset specs), and so does a spec whose resolution or
workspaces are still waiting or running. Step cache entries outlive specs (they answer the
next one) until OFFLOAD_BATCHES_CACHE_TTL (30 days) after they were written.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from offload.batches.queue import NAME as EXECUTIONS
from offload.batches.store import RESOLUTIONS
from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.worker.routine import Periodic, Routine

if TYPE_CHECKING:
    from offload.worker.job import WorkerContext

log = logging.getLogger(__name__)

# Never applied, old enough, and nothing of it still waiting or running.
_EXPIRED = """
SELECT s.id, s.rand_id FROM batch_specs s
WHERE s.applied_at IS NULL AND s.created_at < :cutoff
  AND NOT EXISTS (SELECT 1 FROM batch_changes c WHERE c.batch_spec_id = s.id)
  AND NOT EXISTS (
    SELECT 1 FROM batch_resolution_jobs r
    WHERE r.batch_spec_id = s.id AND r.state IN ('queued', 'processing', 'errored'))
  AND NOT EXISTS (
    SELECT 1 FROM batch_workspace_jobs j
    WHERE j.batch_spec_id = s.id AND j.state IN ('queued', 'processing', 'errored'))
ORDER BY s.id
LIMIT :limit
"""
# Children first, so a pass cut short leaves no row pointing at a deleted one.
_DELETE = (
    "DELETE FROM execution_logs WHERE queue = :executions AND record_id IN "
    "(SELECT id FROM batch_workspace_jobs WHERE batch_spec_id = :spec)",
    "DELETE FROM execution_logs WHERE queue = :resolutions AND record_id IN "
    "(SELECT id FROM batch_resolution_jobs WHERE batch_spec_id = :spec)",
    "DELETE FROM batch_workspace_jobs WHERE batch_spec_id = :spec",
    "DELETE FROM changeset_specs WHERE batch_spec_id = :spec",
    "DELETE FROM batch_workspaces WHERE batch_spec_id = :spec",
    "DELETE FROM batch_spec_files WHERE batch_spec_id = :spec",
    "DELETE FROM batch_resolution_jobs WHERE batch_spec_id = :spec",
    "DELETE FROM batch_specs WHERE id = :spec",
)
# Specs per pass: each is one transaction, so a pass never holds the database for long.
BATCH = 100
# Step cache entries per statement, for the same reason.
CACHE_BATCH = 5000
_EXPIRED_CACHE = (
    "DELETE FROM batch_step_cache WHERE id IN "
    "(SELECT id FROM batch_step_cache WHERE created_at < :cutoff LIMIT :limit) RETURNING id"
)


class SpecExpirer:
    """Deletes unapplied batch specs older than `ttl`, with everything that hangs off them,
    and step cache entries written more than `cache_ttl` ago."""

    def __init__(
        self,
        db: Database,
        ttl: timedelta,
        cache_ttl: timedelta,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.db = db
        self.ttl = ttl
        self.cache_ttl = cache_ttl
        self.clock = clock or SystemClock()

    async def expire_cache(self) -> int:
        """Delete old step cache entries; how many."""
        cutoff = self.clock.now() - self.cache_ttl
        deleted = 0
        while rows := await self.db.fetch(_EXPIRED_CACHE, {"cutoff": cutoff, "limit": CACHE_BATCH}):
            deleted += len(rows)
        if deleted:
            log.info("deleted %d step cache entries written before %s", deleted, cutoff)
        return deleted

    async def expire(self) -> int:
        """One pass; how many specs were deleted."""
        cutoff = self.clock.now() - self.ttl
        rows = await self.db.fetch(_EXPIRED, {"cutoff": cutoff, "limit": BATCH})
        for row in rows:
            params = {"spec": row["id"], "executions": EXECUTIONS, "resolutions": RESOLUTIONS}
            async with self.db.transaction() as tx:
                for statement in _DELETE:
                    await tx.fetch(statement, params)
            log.info("deleted batch spec %s: never applied, made before %s", row["rand_id"], cutoff)
        return len(rows)


def build(context: WorkerContext) -> list[Routine]:
    """One pass every OFFLOAD_JANITOR_INTERVAL: old unapplied specs, then old cache entries."""
    settings = context.settings
    expirer = SpecExpirer(
        context.db, settings.batches_spec_ttl, settings.batches_cache_ttl, clock=context.clock
    )

    async def one_pass() -> None:
        while await expirer.expire() == BATCH:
            pass  # a backlog (a TTL just lowered): keep going until it is cleared
        await expirer.expire_cache()

    return [
        Periodic(
            "batches.spec-expirer",
            context.settings.janitor_interval,
            one_pass,
            sleep=context.sleep,
        )
    ]
