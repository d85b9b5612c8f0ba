"""The `batches` queue: one execution job per workspace, round-robin between users.

Fairness is start-time fair queuing. Each job gets a `fair_key` when it is enqueued and
executors take the lowest key first. A user's keys continue from their last one, but never
start below the key at the head of the queue. So a user who submits 5 workspaces behind
someone else's 200 gets keys next to the head, and the two users alternate from then on.
Sourcegraph ranks waiting jobs per user at every dequeue. This gives the same order from one
index, however long the queue.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from offload.db.base import Database, Transaction
from offload.queue.record import Record
from offload.queue.spec import QueueSpec
from offload.queue.store import SqlQueueStore

NAME = "batches"

SPEC = QueueSpec(
    name=NAME,
    table="batch_workspace_jobs",
    order_by="fair_key, id",
    dequeue_index="batch_workspace_jobs_fair_idx",
    columns=("batch_spec_id", "workspace_id", "user_name", "fair_key"),
    stalled_after=timedelta(seconds=25),
    max_resets=3,
    max_retries=0,
    # A workspace's state is part of its batch spec's story: the janitor keeps it.
    retention=None,
)

# The lowest waiting key: where a user with nothing queued starts. The fair index answers it
# at once; SQLite must be told (see QueueSpec.dequeue_index).
_HEAD = (
    "SELECT MIN(fair_key) AS head FROM batch_workspace_jobs{indexed}"
    " WHERE state IN ('queued', 'errored')"
)

# Reserves `n` consecutive keys for a user in one statement, so that concurrent submissions
# of one user never share keys. GREATEST / MAX: the dialects spell it differently.
_RESERVE = """
INSERT INTO batch_queue_users (user_name, last_key)
VALUES (:user, CAST(:start AS BIGINT) + CAST(:n AS BIGINT) - 1)
ON CONFLICT (user_name) DO UPDATE
SET last_key = {greatest}(batch_queue_users.last_key + 1, CAST(:start AS BIGINT))
    + CAST(:n AS BIGINT) - 1
RETURNING last_key
"""

# The first workspace of a spec that runs locally which nothing answered and nobody holds.
_UNCLAIMED = """
SELECT w.id FROM batch_workspaces w
WHERE w.batch_spec_id = :spec AND NOT w.ignored AND NOT w.skipped AND NOT w.cached_result_found
  AND NOT EXISTS (SELECT 1 FROM batch_workspace_jobs j WHERE j.workspace_id = w.id)
ORDER BY w.id LIMIT 1
"""
# Its job, born held: it is never queued, so no executor of the fleet can dequeue it.
_CLAIM = """
INSERT INTO batch_workspace_jobs (state, queued_at, started_at, last_heartbeat_at,
    worker_hostname, lease_token, batch_spec_id, workspace_id, user_name, fair_key)
VALUES ('processing', :now, :now, :now, :holder, :lease, :spec, :workspace, :user, :key)
RETURNING id
"""


@dataclass(frozen=True)
class WorkspaceJob:
    """What one execution job runs: a workspace of a batch spec, for a user."""

    batch_spec_id: int
    workspace_id: int


class BatchQueue:
    """Enqueues batch workspace jobs with their fair keys."""

    def __init__(self, db: Database, store: SqlQueueStore | None = None) -> None:
        self.db = db
        self.store = store or SqlQueueStore(db, SPEC)
        greatest = "GREATEST" if db.dialect == "postgresql" else "MAX"
        self._reserve = _RESERVE.format(greatest=greatest)
        indexed = f" INDEXED BY {SPEC.dequeue_index_name}" if db.dialect == "sqlite" else ""
        self._head = _HEAD.format(indexed=indexed)

    async def _keys(self, on: Database | Transaction, user: str, n: int) -> int:
        """The first of `n` fair keys reserved for `user`."""
        rows = await on.fetch(self._head)
        head = rows[0]["head"] if rows and rows[0]["head"] is not None else 1
        reserved = await on.fetch(self._reserve, {"user": user, "start": int(head), "n": n})
        return int(reserved[0]["last_key"]) - n + 1

    async def enqueue(self, user: str, jobs: Sequence[WorkspaceJob]) -> int:
        """Queue `jobs` for `user`, in order, behind the user's earlier ones; how many."""
        if not jobs:
            return 0
        first = await self._keys(self.db, user, len(jobs))
        return await self.store.enqueue_many(
            [
                {
                    "batch_spec_id": job.batch_spec_id,
                    "workspace_id": job.workspace_id,
                    "user_name": user,
                    "fair_key": first + offset,
                }
                for offset, job in enumerate(jobs)
            ]
        )

    async def claim(self, spec_id: int, user: str, holder: str) -> Record | None:
        """A job for the next unclaimed workspace of a local spec, held by `holder`; or None.

        The job has a fair key like any other: if its holder dies, the resetter queues it and
        the fleet's executors finish it.
        """
        async with self.db.transaction() as tx:
            if self.db.dialect == "postgresql":
                # Claims of one spec take turns, so no workspace is claimed twice.
                await tx.fetch(
                    "SELECT id FROM batch_specs WHERE id = :spec FOR UPDATE", {"spec": spec_id}
                )
            rows = await tx.fetch(_UNCLAIMED, {"spec": spec_id})
            if not rows:
                return None
            claimed = await tx.fetch(
                _CLAIM,
                {
                    "now": self.store.clock.now(),
                    "holder": holder,
                    "lease": secrets.token_hex(16),
                    "spec": spec_id,
                    "workspace": int(rows[0]["id"]),
                    "user": user,
                    "key": await self._keys(tx, user, 1),
                },
            )
        return await self.store.get(int(claimed[0]["id"]))
