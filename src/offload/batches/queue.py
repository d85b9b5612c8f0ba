"""The `batches` queue: one execution job per workspace, round-robin between users.

Fairness is start-time fair queuing. Each job gets a `fair_key` when it is enqueued and
executors take the lowest key first. A user's keys continue from their last one, but never
start below the key at the head of the queue. So a user who submits 5 workspaces behind
someone else's 200 gets keys next to the head, and the two users alternate from then on.
Sourcegraph ranks waiting jobs per user at every dequeue. This gives the same order from one
index, however long the queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from offload.db.base import Database
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
        sqlite = db.dialect == "sqlite"
        self._head = _HEAD.format(indexed=f" INDEXED BY {SPEC.dequeue_index}" if sqlite else "")

    async def enqueue(self, user: str, jobs: Sequence[WorkspaceJob]) -> int:
        """Queue `jobs` for `user`, in order, behind the user's earlier ones; how many."""
        if not jobs:
            return 0
        rows = await self.db.fetch(self._head)
        head = rows[0]["head"] if rows and rows[0]["head"] is not None else 1
        reserved = await self.db.fetch(
            self._reserve, {"user": user, "start": int(head), "n": len(jobs)}
        )
        first = int(reserved[0]["last_key"]) - len(jobs) + 1
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
