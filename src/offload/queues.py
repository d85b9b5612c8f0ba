"""Every record queue of offload, by name: the one place a new queue is registered."""

from __future__ import annotations

from offload.dispatch.queue import ExecutorQueue
from offload.jobs.queue import SPEC as JOBS
from offload.jobs.transform import to_executor_job
from offload.queue.spec import QueueSpec

# The queues executors consume, with their weights in multi-queue dequeues.
EXECUTOR_QUEUES: dict[str, ExecutorQueue] = {
    JOBS.name: ExecutorQueue(JOBS, to_executor_job, weight=1),
}

QUEUES: dict[str, QueueSpec] = {spec.name: spec for spec in (JOBS,)}
