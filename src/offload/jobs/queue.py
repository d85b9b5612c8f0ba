"""The queue of generic jobs."""

from __future__ import annotations

from datetime import timedelta

from offload.queue.spec import QueueSpec

SPEC = QueueSpec(
    name="default",
    table="jobs",
    columns=("payload",),
    json_columns=frozenset({"payload"}),
    stalled_after=timedelta(seconds=25),
    max_resets=3,
    max_retries=0,
)
