"""The queues of generic jobs: one per name in OFFLOAD_JOB_QUEUES, sharing the jobs table."""

from __future__ import annotations

from datetime import timedelta

from offload.queue.spec import QueueSpec

DEFAULT = "default"


def spec(name: str = DEFAULT) -> QueueSpec:
    """The generic queue `name` (its rows are the jobs whose `queue` column says so)."""
    return QueueSpec(
        name=name,
        table="jobs",
        columns=("payload", "namespace", "submitted_by"),
        # Every job the API creates names both; records made inside offload need not.
        defaults={"namespace": "", "submitted_by": ""},
        json_columns=frozenset({"payload"}),
        partition="queue",
        stalled_after=timedelta(seconds=25),
        max_resets=3,
        max_retries=0,
    )
