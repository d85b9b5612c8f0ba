"""A batch spec whose execution has ended, written through the batches feature's own stores
(resolution, workspace jobs, logs, changeset specs) as the resolver and executors would:
for the pages' tests, which need a finished spec in seconds and no executor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from batchspecs import minimal

from offload.batches import resolver
from offload.batches.queue import BatchQueue, WorkspaceJob
from offload.batches.results import stored_diff
from offload.batches.service import BatchService
from offload.batches.store import BatchSpecRow, NewWorkspace
from offload.db.base import Database
from offload.queue.record import LogEntry
from offload.queue.store import SqlQueueStore


def diff_of(repo: str) -> bytes:
    """The diff the seeded workspace of `repo` made."""
    return (
        f"diff --git README.md README.md\n--- README.md\n+++ README.md\n@@ -1,2 +1,2 @@\n"
        f" # {repo}\n-the colour of {repo}\n+the color of {repo}\n"
    ).encode()


def changeset(repo: str, branch: str = "batch/fix") -> dict[str, Any]:
    """What the seeded workspace of `repo` renders as its changeset spec."""
    return {
        "repo_name": repo,
        "kind": "branch",
        "external_id": None,
        "base_ref": "main",
        "base_rev": "a" * 40,
        "head_ref": branch,
        "title": f"Use color in {repo}",
        "body": f"Edited README.md of {repo}.\n\n<b>not markup</b>",
        "commit_message": f"Fix colour in {repo}",
        "author_name": "offload",
        "author_email": "offload@example.com",
        "published": True,
        "diff": stored_diff(diff_of(repo)),
        "diff_added": 1,
        "diff_deleted": 1,
    }


@dataclass(frozen=True)
class Seeded:
    """A finished spec: which repositories succeeded and which failed."""

    spec: BatchSpecRow
    done: list[str]
    failed: list[str]
    workspace_ids: dict[str, int]


async def finished_spec(
    db: Database, user: str, name: str, *, done: int = 2, failed: int = 1
) -> Seeded:
    """A spec of `user` named `name` over `done` + `failed` repositories, executed: the first
    `done` completed with one changeset spec each, the others failed with their stderr."""
    service = BatchService(db)
    row = await service.submit(user, minimal(name), created_by=user)
    resolutions = SqlQueueStore(db, resolver.SPEC)
    repos = [f"{name}-repo-{i:03d}" for i in range(done + failed)]
    rows = await service.store.add_workspaces(
        row.id, [NewWorkspace(repo_name=r, branch="main", commit="a" * 40) for r in repos]
    )
    queue = BatchQueue(db)
    await queue.enqueue(user, [WorkspaceJob(row.id, w.id) for w in rows])
    now = datetime.now(UTC)
    for _ in rows:
        (record,) = await queue.store.dequeue("executor-1")
        repo = next(w.repo_name for w in rows if w.id == record.fields["workspace_id"])
        ok = repos.index(repo) < done
        out = f"stdout: editing {repo}\n" if ok else f"stderr: sed: {repo}/README.md: denied\n"
        entry = LogEntry(
            key="step.0.run",
            command=["sed"],
            start_time=now,
            exit_code=0 if ok else 1,
            out=out,
            duration_ms=120,
        )
        await queue.store.add_log_entry(record.lease, entry)
        if ok:
            workspace_id = int(record.fields["workspace_id"])
            await service.store.replace_changeset_specs(row.id, workspace_id, [changeset(repo)])
            await queue.store.mark_complete(record.lease)
        else:
            await queue.store.mark_failed(record.lease, f"step 0 exited with 1 in {repo}")
    for record in await resolutions.dequeue("worker-1"):
        await resolutions.mark_complete(record.lease)
    return Seeded(
        spec=row,
        done=repos[:done],
        failed=repos[done:],
        workspace_ids={w.repo_name: w.id for w in rows},
    )
