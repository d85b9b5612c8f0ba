"""The `codeintel` queue: index jobs that executors run, asked-for ones before scheduled ones."""

from __future__ import annotations

from datetime import timedelta

from offload.queue.spec import QueueSpec

NAME = "codeintel"

# Index jobs someone asked for (`offload codeintel index`) run before scheduled ones.
MANUAL, SCHEDULED = 0, 1

SPEC = QueueSpec(
    name=NAME,
    table="codeintel_index_jobs",
    order_by="priority, queued_at, id",
    dequeue_index="codeintel_index_jobs_priority_idx",
    columns=(
        "repo_name",
        "commit_sha",
        "root",
        "indexer",
        "job",
        "source",
        "priority",
        "requested_by",
        "upload_id",
    ),
    json_columns=frozenset({"job"}),
    defaults={"priority": SCHEDULED, "requested_by": "", "upload_id": None},
    stalled_after=timedelta(seconds=25),
    max_resets=3,
    max_retries=0,
    retention=timedelta(days=30),
)
