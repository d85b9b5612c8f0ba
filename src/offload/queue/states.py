"""The states of a record, as stored in its `state` column."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """Where a record is in its life: queued -> processing -> one of the finished states."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    ERRORED = "errored"  # failed, will be retried after its backoff
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        """No consumer will touch the record again unless someone requeues it."""
        return self in (State.COMPLETED, State.FAILED, State.CANCELED)
