"""Queue gauges: records per state and the oldest wait, read from the database."""

from __future__ import annotations

from offload import metrics
from offload.queue.store import SqlQueueStore


async def measure(store: SqlQueueStore) -> None:
    """Set QUEUE_SIZE for every state and QUEUE_OLDEST (0 when nothing waits) of one queue."""
    queue = store.spec.name
    for state, count in (await store.counts()).items():
        metrics.QUEUE_SIZE.labels(queue, state.value).set(count)
    age = await store.oldest_queued_age()
    metrics.QUEUE_OLDEST.labels(queue).set(age.total_seconds() if age else 0)
