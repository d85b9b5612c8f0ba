"""The `codeintel.uploads` queue: each uploaded index waits here until it is processed."""

from __future__ import annotations

from datetime import timedelta

from offload.queue.spec import QueueSpec

NAME = "codeintel.uploads"

SPEC = QueueSpec(
    name=NAME,
    table="codeintel_uploads",
    columns=(
        "repo_name",
        "commit_sha",
        "root",
        "indexer",
        "index_job_id",
        "file_name",
        "size",
        "sha256",
        "uploaded_by",
    ),
    defaults={"index_job_id": None, "uploaded_by": ""},
    # Processing a large index takes a while; its consumer heartbeats meanwhile.
    stalled_after=timedelta(minutes=2),
    max_resets=3,
    # A corrupt index stays corrupt: failing it at once says so sooner than retries would.
    max_retries=0,
    # Uploads are kept while they answer code navigation; codeintel.uploads' janitor ends them.
    retention=None,
)
