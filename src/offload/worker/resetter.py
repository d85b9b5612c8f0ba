"""`queues.resetter`: hands back records whose holder stopped heartbeating, in every queue."""

from __future__ import annotations

import logging

from offload.queue.store import SqlQueueStore
from offload.worker.job import WorkerContext
from offload.worker.routine import Routine

log = logging.getLogger(__name__)


async def reset(store: SqlQueueStore) -> None:
    """One pass over one queue: requeue stalled records, fail those reset too often."""
    resets = await store.reset_stalled()
    queue = store.spec.name
    if resets.reset_ids:
        log.info(
            "queue %s: %d stalled record(s) queued again: %s",
            queue,
            len(resets.reset_ids),
            resets.reset_ids,
            extra={"queue": queue, "reset_ids": resets.reset_ids},
        )
    if resets.failed_ids:
        log.warning(
            "queue %s: %d stalled record(s) failed after %d resets: %s",
            queue,
            len(resets.failed_ids),
            store.spec.max_resets,
            resets.failed_ids,
            extra={"queue": queue, "failed_ids": resets.failed_ids},
        )


def build(context: WorkerContext) -> list[Routine]:
    """One resetter routine per queue."""
    return context.per_queue("queues.resetter", context.settings.resetter_interval, reset)
