"""The `batches` queue: round-robin between users, FIFO for each user, on both databases."""

from __future__ import annotations

import asyncio

from offload.batches.queue import BatchQueue, WorkspaceJob
from offload.db.base import Database
from offload.queue.record import Record


def jobs(spec: int, count: int) -> list[WorkspaceJob]:
    """`count` workspaces of batch spec `spec`."""
    return [WorkspaceJob(batch_spec_id=spec, workspace_id=i) for i in range(count)]


def who(record: Record) -> tuple[str, int]:
    """(user, workspace) of a leased job."""
    return record.fields["user_name"], record.fields["workspace_id"]


async def drain(queue: BatchQueue) -> list[tuple[str, int]]:
    """Every waiting job, in the order executors would start them."""
    started = []
    while records := await queue.store.dequeue("executor-1", limit=1):
        started += [who(r) for r in records]
    return started


async def test_a_small_submission_starts_before_the_big_ones_20th(db: Database) -> None:
    queue = BatchQueue(db)
    assert await queue.enqueue("alice", jobs(1, 200)) == 200
    first = await queue.store.dequeue("executor-1", limit=3)  # alice's first three are running
    assert [who(r) for r in first] == [("alice", 0), ("alice", 1), ("alice", 2)]
    await queue.enqueue("bob", jobs(2, 5))
    started = [who(r) for r in first] + await drain(queue)
    alice = [i for i, (user, _) in enumerate(started) if user == "alice"]
    bob = [i for i, (user, _) in enumerate(started) if user == "bob"]
    assert len(alice) == 200 and len(bob) == 5
    assert max(bob) < alice[19], started[:30]
    # Each user's own workspaces start in the order they were submitted.
    assert [w for user, w in started if user == "alice"] == list(range(200))
    assert [w for user, w in started if user == "bob"] == list(range(5))


async def test_users_alternate_and_a_second_submission_waits_behind_the_first(
    db: Database,
) -> None:
    queue = BatchQueue(db)
    await queue.enqueue("alice", jobs(1, 3))
    await queue.enqueue("bob", jobs(2, 3))
    await queue.enqueue("alice", jobs(3, 2))
    await queue.enqueue("carol", jobs(4, 1))
    started = await drain(queue)
    users = [user for user, _ in started]
    assert users == ["alice", "bob", "carol", "alice", "bob", "alice", "bob", "alice", "alice"]
    alice_specs = [
        r
        for r in await db.fetch(
            "SELECT batch_spec_id FROM batch_workspace_jobs WHERE user_name = 'alice' "
            "ORDER BY started_at, id"
        )
    ]
    assert [r["batch_spec_id"] for r in alice_specs] == [1, 1, 1, 3, 3]


async def test_concurrent_submissions_of_one_user_never_share_keys(db: Database) -> None:
    queue = BatchQueue(db)
    await asyncio.gather(*(queue.enqueue("alice", jobs(s, 20)) for s in range(5)))
    rows = await db.fetch("SELECT fair_key FROM batch_workspace_jobs")
    keys = sorted(int(r["fair_key"]) for r in rows)
    assert keys == list(range(1, 101))
