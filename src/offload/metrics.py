"""Prometheus metrics of every offload process, exposed at /metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

# One registry for offload's own metrics, so tests and processes see exactly ours.
REGISTRY = CollectorRegistry(auto_describe=True)

QUEUE_SIZE = Gauge(
    "offload_queue_records", "Records per queue and state.", ["queue", "state"], registry=REGISTRY
)
QUEUE_OLDEST = Gauge(
    "offload_queue_oldest_queued_seconds",
    "Age of the longest-waiting eligible record (the autoscaling signal).",
    ["queue"],
    registry=REGISTRY,
)
DEQUEUES = Counter(
    "offload_queue_dequeues", "Records leased to a consumer.", ["queue"], registry=REGISTRY
)
COMPLETIONS = Counter(
    "offload_queue_completions", "Records completed.", ["queue"], registry=REGISTRY
)
ERRORS = Counter(
    "offload_queue_errors", "Records errored (to be retried).", ["queue"], registry=REGISTRY
)
FAILURES = Counter(
    "offload_queue_failures", "Records failed for good.", ["queue"], registry=REGISTRY
)
RESETS = Counter(
    "offload_queue_resets",
    "Records handed back after their holder stopped heartbeating.",
    ["queue"],
    registry=REGISTRY,
)
CANCELS = Counter("offload_queue_cancels", "Records canceled.", ["queue"], registry=REGISTRY)
ROUTINE_RESTARTS = Counter(
    "offload_routine_restarts",
    "Worker routines restarted after they raised.",
    ["routine"],
    registry=REGISTRY,
)


def exposition() -> bytes:
    """The text exposition of every offload metric."""
    return generate_latest(REGISTRY)


__all__ = [
    "CANCELS",
    "COMPLETIONS",
    "CONTENT_TYPE",
    "DEQUEUES",
    "ERRORS",
    "FAILURES",
    "QUEUE_OLDEST",
    "QUEUE_SIZE",
    "RESETS",
    "ROUTINE_RESTARTS",
    "exposition",
]
