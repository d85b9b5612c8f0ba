"""`queues.janitor`: deletes the logs, then the records, of jobs that finished long ago."""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial

from offload.config import Settings
from offload.queue.spec import QueueSpec
from offload.queue.store import SqlQueueStore
from offload.worker.job import WorkerContext
from offload.worker.routine import Routine

log = logging.getLogger(__name__)


def records_retention(settings: Settings, spec: QueueSpec) -> timedelta | None:
    """How long `spec`'s finished records are kept; None keeps them for ever.

    A queue that keeps its records (retention None) keeps them whatever the settings say;
    otherwise OFFLOAD_RECORDS_RETENTION wins when the operator set it, else the queue's own.
    """
    if spec.retention is None:
        return None
    if "records_retention" in settings.model_fields_set:
        return settings.records_retention
    return spec.retention


async def sweep(store: SqlQueueStore, settings: Settings) -> None:
    """One pass over one queue: drop old logs, then old finished records with theirs."""
    now = store.clock.now()
    retention = records_retention(settings, store.spec)
    deleted = await store.delete_finished(
        logs_before=now - settings.logs_retention,
        records_before=None if retention is None else now - retention,
    )
    if deleted:
        log.info(
            "queue %s: deleted %d record(s) finished more than %s ago",
            store.spec.name,
            deleted,
            retention,
            extra={"queue": store.spec.name, "deleted": deleted},
        )


def build(context: WorkerContext) -> list[Routine]:
    """One janitor routine per queue."""
    return context.per_queue(
        "queues.janitor",
        context.settings.janitor_interval,
        partial(sweep, settings=context.settings),
    )
