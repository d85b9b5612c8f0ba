"""A spec's progress: workspaces counted by state, as `offload batch preview` and `status` show."""

from __future__ import annotations

from batchspecs import minimal, workspace

from offload.batches.queue import BatchQueue, WorkspaceJob
from offload.batches.service import BatchService
from offload.db.base import Database


async def test_progress_counts_each_workspace_once_by_its_state(db: Database) -> None:
    service = BatchService(db)
    row = await service.submit("alice", minimal("progress"))
    found = [workspace(f"s{i}") for i in range(6)]
    found += [workspace("ignored", ignored=True), workspace("skipped", skipped=True)]
    rows = await service.store.add_workspaces(row.id, found)
    await service.store.set_cached([(rows[5].id, 1, True)])
    queue = BatchQueue(db)
    # Four of the five that run are queued so far; one is not (resolution still queueing).
    await queue.enqueue("alice", [WorkspaceJob(row.id, w.id) for w in rows[:4]])
    (running,) = await queue.store.dequeue("executor-1")
    (done,) = await queue.store.dequeue("executor-1")
    await queue.store.mark_complete(done.lease)

    progress = await service.progress(row.rand_id)
    assert progress["workspaces"] == 8
    assert progress["states"] == {
        "processing": 1,
        "completed": 1,
        "queued": 2,
        "pending": 1,
        "cached": 1,
        "ignored": 1,
        "skipped": 1,
    }
    assert progress["ignored"] == ["demo"]
    assert progress["done"] is False  # its resolution has not finished either

    # Resolving again (a retried resolution) replaces the workspaces and their waiting jobs.
    again = await service.store.add_workspaces(row.id, found[:2])
    progress = await service.progress(row.rand_id)
    assert progress["workspaces"] == 2
    assert progress["states"] == {"pending": 1, "processing": 1}
    assert [w.path for w in again] == ["s0", "s1"]
    assert running.fields["workspace_id"] == rows[0].id
