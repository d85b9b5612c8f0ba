"""A spec run with `offload batch preview --local`: its own run claims its workspaces.

The fleet's executors never see them while the run is alive; if the run dies, the resetter
queues them like any other job and the fleet finishes them.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from batchspecs import minimal, workspace

from offload.batches.queue import BatchQueue, WorkspaceJob
from offload.batches.service import BatchService, BatchStateError
from offload.db.base import Database
from offload.queue.states import State
from offload.testing import FakeClock


async def test_only_the_local_run_claims_its_workspaces_and_the_fleet_gets_a_dead_ones(
    db: Database,
) -> None:
    clock = FakeClock()
    service = BatchService(db, clock=clock)
    row = await service.submit("alice", minimal("local"), runs_locally=True)
    rows = await service.store.add_workspaces(
        row.id, [workspace(f"s{i}") for i in range(3)] + [workspace("x", ignored=True)]
    )
    await service.store.set_cached([(rows[2].id, 1, True)])
    fleet = BatchQueue(db, service.executions)
    # Someone else's workspace waits in the fleet's queue meanwhile.
    other = await service.submit("bob", minimal("fleet"))
    (bobs,) = await service.store.add_workspaces(other.id, [workspace("b")])
    await fleet.enqueue("bob", [WorkspaceJob(other.id, bobs.id)])

    first = await service.claim(row.rand_id, "local-laptop")
    second = await service.claim(row.rand_id, "local-laptop")
    assert first is not None and second is not None
    # In order, only those nothing answered; then none is left.
    assert [first.fields["workspace_id"], second.fields["workspace_id"]] == [rows[0].id, rows[1].id]
    assert await service.claim(row.rand_id, "local-laptop") is None
    assert first.state == State.PROCESSING and first.worker_hostname == "local-laptop"
    progress = await service.progress(row.rand_id)
    assert progress["states"] == {"processing": 2, "cached": 1, "ignored": 1}

    # The fleet sees bob's job only.
    leased = await service.executions.dequeue("executor-1", limit=5)
    assert [r.fields["user_name"] for r in leased] == ["bob"]
    await service.executions.mark_complete(leased[0].lease)

    # The run finishes one workspace and dies holding the other: the fleet finishes that.
    await service.executions.heartbeat("local-laptop", [first.id, second.id])
    await service.executions.mark_complete(first.lease)
    clock.advance(timedelta(minutes=5))
    resets = await service.executions.reset_stalled()
    assert second.id in resets.reset_ids
    (rescued,) = await service.executions.dequeue("executor-1")
    assert rescued.id == second.id and rescued.fields["workspace_id"] == rows[1].id


async def test_a_spec_for_the_executors_hands_nothing_to_a_local_run(db: Database) -> None:
    service = BatchService(db)
    row = await service.submit("alice", minimal("fleet"))
    await service.store.add_workspaces(row.id, [workspace("s0")])
    with pytest.raises(BatchStateError, match="runs on the executors"):
        await service.claim(row.rand_id, "local-laptop")
