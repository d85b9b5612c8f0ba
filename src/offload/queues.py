"""Every record queue of offload, by name: the one place a new queue is registered."""

from __future__ import annotations

from functools import partial

from offload.batches import changesets, resolver, transform
from offload.batches import queue as batches
from offload.batches.bundles import Bundles
from offload.codeintel import queue as codeintel
from offload.codeintel import transform as index_transform
from offload.codeintel.uploads import queue as uploads
from offload.config import Settings
from offload.dispatch.queue import ExecutorQueue
from offload.jobs import queue as jobs
from offload.jobs.transform import to_executor_job
from offload.queue.spec import QueueSpec
from offload.secrets.store import Secrets


class QueueSettingError(ValueError):
    """The queue settings name a queue offload does not have."""


def record_queues(settings: Settings) -> dict[str, QueueSpec]:
    """Every record queue, for the worker's resetter, janitor and gauges."""
    return {
        **{name: jobs.spec(name) for name in settings.job_queues},
        batches.NAME: batches.SPEC,
        resolver.SPEC.name: resolver.SPEC,
        changesets.SPEC.name: changesets.SPEC,
        codeintel.NAME: codeintel.SPEC,
        uploads.NAME: uploads.SPEC,
    }


def executor_queue_names(settings: Settings) -> list[str]:
    """The names of the queues executors consume; QueueSettingError if the weights name
    another (checks the settings without building anything)."""
    names = [*settings.job_queues, batches.NAME, codeintel.NAME]
    unknown = sorted(set(settings.executor_queue_weights) - set(names))
    if unknown:
        raise QueueSettingError(
            f"OFFLOAD_EXECUTOR_QUEUE_WEIGHTS names {', '.join(unknown)}, which is not a queue; "
            f"the queues are {', '.join(names)}"
        )
    return names


def executor_queues(settings: Settings, secrets: Secrets) -> dict[str, ExecutorQueue]:
    """The queues executors consume, with their weights in multi-queue dequeues; their
    records become jobs with the secrets of `secrets`."""
    executor_queue_names(settings)
    weights = settings.executor_queue_weights
    queues = {
        name: ExecutorQueue(
            jobs.spec(name),
            partial(to_executor_job, secrets=secrets),
            weight=weights.get(name, 1),
        )
        for name in settings.job_queues
    }
    queues[batches.NAME] = ExecutorQueue(
        batches.SPEC,
        partial(transform.to_executor_job, secrets=secrets),
        weight=weights.get(batches.NAME, 1),
        finish=partial(transform.finish, secrets=secrets),
        bundler=Bundles(
            settings.batches_bundle_size,
            settings.batches_bundle_share,
            settings.batches_bundle_seconds.total_seconds(),
        ),
    )
    queues[codeintel.NAME] = ExecutorQueue(
        codeintel.SPEC,
        partial(
            index_transform.to_executor_job, secrets=secrets, network=settings.codeintel_network
        ),
        weight=weights.get(codeintel.NAME, 1),
        finish=index_transform.finish,
    )
    return queues


__all__ = ["QueueSettingError", "executor_queue_names", "executor_queues", "record_queues"]
