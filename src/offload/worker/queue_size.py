"""`metrics.queue-size`: per-queue record counts and the oldest wait, as Prometheus gauges."""

from __future__ import annotations

from offload.queue.gauges import measure
from offload.worker.job import WorkerContext
from offload.worker.routine import Routine


def build(context: WorkerContext) -> list[Routine]:
    """One gauge routine per queue."""
    return context.per_queue("metrics.queue-size", context.settings.metrics_interval, measure)
