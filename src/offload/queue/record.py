"""Records and leases: what a consumer holds while it works on a job."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from offload.db.values import decode_json, parse_time
from offload.queue.spec import QueueSpec
from offload.queue.states import State


@dataclass(frozen=True)
class Lease:
    """The right to act on one processing record: who holds it, and the token of this turn."""

    queue: str
    id: int
    holder: str
    token: str


@dataclass(frozen=True)
class Record:
    """One row of a record queue."""

    queue: str
    id: int
    state: State
    queued_at: datetime
    started_at: datetime | None
    last_heartbeat_at: datetime | None
    finished_at: datetime | None
    process_after: datetime | None
    num_resets: int
    num_failures: int
    worker_hostname: str | None
    cancel: bool
    failure_message: str | None
    lease_token: str | None
    fields: Mapping[str, Any] = field(default_factory=dict)
    # How many jobs the record stands for (an executor's job and its bundle): its time limit
    # is that many times a single job's.
    units: int = 1

    @classmethod
    def from_row(cls, spec: QueueSpec, row: Mapping[str, Any]) -> Record:
        """Build from a row of `spec`'s table, decoding the backend's types."""
        fields = {
            name: decode_json(row[name]) if name in spec.json_columns else row[name]
            for name in spec.columns
        }
        queued_at = parse_time(row["queued_at"])
        assert queued_at is not None
        return cls(
            queue=spec.name,
            id=int(row["id"]),
            state=State(row["state"]),
            queued_at=queued_at,
            started_at=parse_time(row["started_at"]),
            last_heartbeat_at=parse_time(row["last_heartbeat_at"]),
            finished_at=parse_time(row["finished_at"]),
            process_after=parse_time(row["process_after"]),
            num_resets=int(row["num_resets"]),
            num_failures=int(row["num_failures"]),
            worker_hostname=row["worker_hostname"],
            cancel=bool(row["cancel"]),
            failure_message=row["failure_message"],
            lease_token=row["lease_token"],
            fields=fields,
        )

    @property
    def attempt(self) -> int:
        """Which run of the record this is: 1, then one more per reset or failure (the number
        its log entries carry)."""
        return self.num_resets + self.num_failures + 1

    @property
    def lease(self) -> Lease:
        """The lease of the current holder (only meaningful while processing)."""
        if self.state is not State.PROCESSING or not self.worker_hostname or not self.lease_token:
            raise ValueError(f"record {self.id} of queue {self.queue} is {self.state}, not held")
        return Lease(self.queue, self.id, self.worker_hostname, self.lease_token)


@dataclass(frozen=True)
class Heartbeat:
    """What a heartbeat learned: which jobs are still ours, and which should stop."""

    known_ids: list[int]
    cancel_ids: list[int]


@dataclass(frozen=True)
class LogEntry:
    """One command of a job: its output so far and, once it ended, its exit code."""

    key: str
    command: list[str]
    start_time: datetime
    exit_code: int | None = None
    out: str = ""
    duration_ms: int | None = None
    id: int | None = None
    attempt: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LogEntry:
        """Build from a row of the execution_logs table."""
        start = parse_time(row["start_time"])
        assert start is not None
        return cls(
            key=row["key"],
            command=list(decode_json(row["command"])),
            start_time=start,
            exit_code=row["exit_code"],
            out=row["out"],
            duration_ms=row["duration_ms"],
            id=int(row["id"]),
            attempt=int(row["attempt"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The entry as the API shows it (a job's logs, an index job's)."""
        return {
            "id": self.id,
            "attempt": self.attempt,
            "key": self.key,
            "command": self.command,
            "startTime": self.start_time.isoformat(),
            "exitCode": self.exit_code,
            "durationMs": self.duration_ms,
            "out": self.out,
        }


@dataclass(frozen=True)
class LogSlice:
    """A log entry whose `out` holds its output from character `offset` on, of `length`."""

    entry: LogEntry
    offset: int
    length: int


@dataclass(frozen=True)
class Resets:
    """What one resetter pass did to a queue."""

    reset_ids: list[int]
    failed_ids: list[int]


class NotOwned(LookupError):
    """The caller no longer holds the job (it was reset, finished, or handed to another)."""

    def __init__(self, lease: Lease, action: str) -> None:
        super().__init__(
            f"not owned: {lease.holder} cannot {action} job {lease.id} of queue {lease.queue}; "
            "its lease was lost (the job was reset, finished or handed to another holder)"
        )
        self.lease = lease
