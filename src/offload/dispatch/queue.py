"""ExecutorQueue: a record queue that executors consume, and how its records become jobs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from offload.db.base import Database
from offload.protocol.wire import Job
from offload.queue.record import LogEntry, Record
from offload.queue.spec import QueueSpec

# Turns a leased record into the job payload an executor runs (without its token).
Transform = Callable[[Record, Database], Awaitable[Job]]
# Runs when an executor reports a job's end, before the record's state changes: it reads the
# job's log (e.g. the results a job printed). The flag says whether the job succeeded.
Finish = Callable[[Record, Database, list[LogEntry], bool], Awaitable[None]]


@dataclass(frozen=True)
class Companions:
    """Which other records may go to an executor with a leased one, as one bundle: up to
    `limit` rows that meet `condition` (trusted SQL over the queue's table, values bound from
    `params`), in queue order. They must share the leased job's checkout."""

    condition: str
    params: dict[str, Any]
    limit: int


# The companions of a record just leased and transformed (None: it goes alone).
Bundler = Callable[[Record, Job, Database], Awaitable[Companions | None]]


class TransformError(ValueError):
    """A record cannot become a job; it is failed with this message."""


class FinishError(ValueError):
    """A job that reported success cannot be used; it is failed with this message."""


@dataclass(frozen=True)
class ExecutorQueue:
    """One queue executors can ask for, with its share of multi-queue dequeues."""

    spec: QueueSpec
    transform: Transform
    weight: int = 1
    finish: Finish | None = None
    bundler: Bundler | None = None
