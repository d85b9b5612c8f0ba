"""QueueSpec: everything the generic store needs to know about one feature's queue."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class QueueSpec:
    """One record queue: its table, order and failure policy.

    Identifiers here are pasted into SQL, so a spec is only ever built by offload's own code,
    never from user input; __post_init__ checks that they look like identifiers.
    """

    name: str
    table: str
    # SQL ORDER BY over the table's columns: who is dequeued first.
    order_by: str = "queued_at, id"
    # A processing record whose heartbeat is older than this is handed back by the resetter.
    stalled_after: timedelta = timedelta(seconds=25)
    # Resets before the record is failed instead (its holders keep dying).
    max_resets: int = 3
    # Retries after an error before the record is failed; errored records wait a backoff.
    max_retries: int = 0
    retry_backoff: timedelta = timedelta(seconds=10)
    max_backoff: timedelta = timedelta(hours=1)
    # Finished records older than this are deleted by the janitor, with their logs (None: kept).
    retention: timedelta | None = timedelta(days=30)
    # The queue's own columns, returned with each record and accepted by enqueue.
    columns: tuple[str, ...] = ()
    json_columns: frozenset[str] = field(default_factory=frozenset)
    # Values of columns an enqueue may leave out (every other column must be given).
    defaults: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # When several queues share one table: the column that holds each record's queue name.
    # Every verb of this queue then sees only the rows whose column equals `name`.
    partition: str | None = None
    # The partial index that serves `order_by` (default: record_queue_indexes' dequeue index).
    # SQLite is told to use it: without statistics its planner takes the state index instead
    # and sorts every waiting row at each dequeue (50 ms at 45,000 waiting).
    dequeue_index: str = ""

    @property
    def dequeue_index_name(self) -> str:
        """The index dequeue reads."""
        return self.dequeue_index or f"{self.table}_dequeue_idx"

    def __post_init__(self) -> None:
        named = filter(None, [self.partition, self.dequeue_index])
        for identifier in (self.table, *self.columns, *named):
            if not _IDENTIFIER.match(identifier):
                raise ValueError(
                    f"queue {self.name!r}: {identifier!r} is not a plain SQL identifier"
                )
        if not re.match(r"^[a-z0-9][a-z0-9._-]*$", self.name):
            raise ValueError(f"queue name {self.name!r} must be lowercase letters, digits, . _ -")

    def backoff(self, failures: int) -> timedelta:
        """How long an errored record waits before its retry number `failures`."""
        seconds = self.retry_backoff.total_seconds() * 2 ** max(failures - 1, 0)
        return timedelta(seconds=min(seconds, self.max_backoff.total_seconds()))
