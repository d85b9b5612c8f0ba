"""`batches.spec-expirer`: previews nobody applied go after the TTL, with all their rows."""

from __future__ import annotations

from datetime import timedelta

from batchspecs import minimal

from offload.batches import resolver
from offload.batches.expirer import SpecExpirer
from offload.batches.queue import BatchQueue, WorkspaceJob
from offload.batches.service import BatchService
from offload.batches.store import BatchStore, NewWorkspace
from offload.db.base import Database
from offload.queue.record import LogEntry
from offload.queue.store import SqlQueueStore
from offload.testing import FakeClock

TTL = timedelta(days=7)
CACHE_TTL = timedelta(days=30)
# What one spec leaves in each table, by spec id.
TABLES = (
    "batch_specs",
    "batch_spec_files",
    "batch_resolution_jobs",
    "batch_workspaces",
    "batch_workspace_jobs",
    "changeset_specs",
)


async def rows_of(db: Database, spec_id: int) -> dict[str, int]:
    """How many rows of each table belong to a spec, and its jobs' log entries."""
    counts = {}
    for table in TABLES:
        column = "id" if table == "batch_specs" else "batch_spec_id"
        rows = await db.fetch(
            f"SELECT COUNT(*) AS n FROM {table} WHERE {column} = :s", {"s": spec_id}
        )
        counts[table] = int(rows[0]["n"])
    rows = await db.fetch(
        "SELECT COUNT(*) AS n FROM execution_logs l JOIN batch_workspace_jobs j "
        "ON l.queue = 'batches' AND l.record_id = j.id WHERE j.batch_spec_id = :s",
        {"s": spec_id},
    )
    counts["execution_logs"] = int(rows[0]["n"])
    return counts


async def previewed(db: Database, clock: FakeClock, name: str, *, finish: bool = True) -> int:
    """A spec as `offload batch preview` leaves it: resolved, its workspace run (or waiting)."""
    service = BatchService(db, clock)
    row = await service.submit("alice", minimal(name), files={"tool.sh": b"echo"})
    resolutions = SqlQueueStore(db, resolver.SPEC, clock=clock)
    (resolution,) = await resolutions.dequeue("worker-1")
    (workspace,) = await service.store.add_workspaces(
        row.id, [NewWorkspace(repo_name="demo", branch="main", commit="a" * 40)]
    )
    queue = BatchQueue(db)
    await queue.enqueue("alice", [WorkspaceJob(row.id, workspace.id)])
    await resolutions.mark_complete(resolution.lease)
    if finish:
        (job,) = await queue.store.dequeue("executor-1")
        entry = LogEntry(key="step.run", command=["true"], start_time=clock.now(), exit_code=0)
        await queue.store.add_log_entry(job.lease, entry)
        await queue.store.mark_complete(job.lease)
        spec = {
            "repo_name": "demo",
            "kind": "branch",
            "external_id": None,
            "base_ref": "main",
            "base_rev": "a" * 40,
            "head_ref": "b",
            "title": "t",
            "body": "",
            "commit_message": "m",
            "author_name": "alice",
            "author_email": "alice@example.com",
            "published": False,
            "diff": "",
            "diff_added": 0,
            "diff_deleted": 0,
        }
        await service.store.add_changeset_specs(row.id, {workspace.id: [spec]})
    return row.id


async def test_only_old_specs_nobody_applied_or_is_running_are_deleted(db: Database) -> None:
    clock = FakeClock()
    old = await previewed(db, clock, "old")
    applied = await previewed(db, clock, "applied")
    # Its workspace is still waiting for an executor (the last previews leave theirs waiting,
    # so that executors take them in order).
    running = await previewed(db, clock, "running", finish=False)
    await db.fetch(
        "UPDATE batch_specs SET applied_at = :now WHERE id = :s", {"now": clock.now(), "s": applied}
    )
    clock.advance(TTL + timedelta(hours=1))
    recent = await previewed(db, clock, "recent", finish=False)
    before = {spec: await rows_of(db, spec) for spec in (old, running, applied, recent)}
    assert before[old] == {
        "batch_specs": 1,
        "batch_spec_files": 1,
        "batch_resolution_jobs": 1,
        "batch_workspaces": 1,
        "batch_workspace_jobs": 1,
        "changeset_specs": 1,
        "execution_logs": 1,
    }

    expirer = SpecExpirer(db, TTL, CACHE_TTL, clock=clock)
    assert await expirer.expire() == 1
    assert set((await rows_of(db, old)).values()) == {0}
    for kept in (running, applied, recent):
        assert await rows_of(db, kept) == before[kept]
    assert await expirer.expire() == 0

    # Once its workspace has run, the old spec that was still running goes too.
    queue = BatchQueue(db)
    (job,) = await queue.store.dequeue("executor-1")
    assert job.fields["batch_spec_id"] == running
    await queue.store.mark_complete(job.lease)
    assert await expirer.expire() == 1
    assert set((await rows_of(db, running)).values()) == {0}
    assert await rows_of(db, applied) == before[applied]


async def test_step_cache_entries_go_once_they_are_old(db: Database) -> None:
    clock = FakeClock()
    store = BatchStore(db, clock)
    await store.cache("alice", {"old": {"stepIndex": 0}, "rewritten": {"stepIndex": 0}})
    clock.advance(CACHE_TTL - timedelta(days=1))
    # Running the step again writes its entry anew, which starts its time again.
    await store.cache("alice", {"rewritten": {"stepIndex": 0, "again": True}})
    clock.advance(timedelta(days=2))
    await store.cache("bob", {"new": {"stepIndex": 0}})

    expirer = SpecExpirer(db, TTL, CACHE_TTL, clock=clock)
    assert await expirer.expire_cache() == 1
    assert await store.cached("alice", ["old", "rewritten"]) == {
        "rewritten": {"stepIndex": 0, "again": True}
    }
    assert await store.cached("bob", ["new"]) == {"new": {"stepIndex": 0}}
    assert await expirer.expire_cache() == 0
