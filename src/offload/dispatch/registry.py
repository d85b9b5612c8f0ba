"""The executors the server has heard from: registered by their heartbeats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.db.values import decode_json, parse_time
from offload.protocol.wire import HeartbeatRequest

# An executor not heard from for this long is shown as inactive.
ACTIVE_WINDOW = timedelta(seconds=20)


def _limits(value: Any) -> dict[str, str] | None:
    limits = decode_json(value) if value is not None else None
    return {str(k): str(v) for k, v in limits.items()} if isinstance(limits, dict) else None


def _running(value: Any) -> dict[str, list[int]]:
    running = decode_json(value) if value is not None else None
    if not isinstance(running, dict):
        return {}
    return {str(q): [int(i) for i in ids] for q, ids in running.items()}


@dataclass(frozen=True)
class Executor:
    """One executor as the site admin sees it."""

    hostname: str
    queues: list[str]
    os: str
    architecture: str
    executor_version: str
    git_version: str
    docker_version: str
    runtime: str
    first_seen_at: datetime
    last_seen_at: datetime
    # Kind -> value ("memory": "2G"); None when the executor does not report them.
    limits: dict[str, str] | None = None
    # Queue -> ids of the jobs it held at its last heartbeat.
    running: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Executor:
        """Build from a row of the executors table."""
        first, last = parse_time(row["first_seen_at"]), parse_time(row["last_seen_at"])
        assert first is not None and last is not None
        return cls(
            hostname=row["hostname"],
            queues=list(decode_json(row["queues"])),
            os=row["os"],
            architecture=row["architecture"],
            executor_version=row["executor_version"],
            git_version=row["git_version"],
            docker_version=row["docker_version"],
            runtime=row["runtime"],
            first_seen_at=first,
            last_seen_at=last,
            limits=_limits(row["job_limits"]),
            running=_running(row["running_jobs"]),
        )

    @property
    def running_count(self) -> int:
        """How many jobs it held at its last heartbeat."""
        return sum(len(ids) for ids in self.running.values())

    def active(self, now: datetime, window: timedelta = ACTIVE_WINDOW) -> bool:
        """Heard from within `window`."""
        return now - self.last_seen_at <= window


class ExecutorRegistry:
    """Upsert executors on heartbeat; list them for the site admin."""

    def __init__(self, db: Database, *, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    async def heartbeat(
        self,
        beat: HeartbeatRequest,
        queues: list[str],
        running: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        """Record that `beat`'s executor is alive, with what it says about itself; `running`:
        the jobs it holds, by queue."""
        now = self.clock.now()
        await self.db.fetch(
            "INSERT INTO executors (hostname, queues, os, architecture, executor_version,"
            " git_version, docker_version, runtime, job_limits, running_jobs, first_seen_at,"
            " last_seen_at)"
            " VALUES (:hostname, :queues, :os, :architecture, :executor_version, :git_version,"
            " :docker_version, :runtime, :limits, :running, :now, :now)"
            " ON CONFLICT (hostname) DO UPDATE SET queues = excluded.queues, os = excluded.os,"
            " architecture = excluded.architecture,"
            " executor_version = excluded.executor_version,"
            " git_version = excluded.git_version, docker_version = excluded.docker_version,"
            " runtime = excluded.runtime, job_limits = excluded.job_limits,"
            " running_jobs = excluded.running_jobs, last_seen_at = excluded.last_seen_at",
            {
                "hostname": beat.executor_name,
                "queues": queues,
                "os": beat.os,
                "architecture": beat.architecture,
                "executor_version": beat.executor_version,
                "git_version": beat.git_version,
                "docker_version": beat.docker_version,
                "runtime": beat.runtime,
                "limits": beat.limits,
                "running": {q: list(ids) for q, ids in (running or {}).items() if ids},
                "now": now,
            },
        )

    async def exists(self, hostname: str) -> bool:
        """Whether `hostname` has ever sent a heartbeat."""
        rows = await self.db.fetch(
            "SELECT 1 AS found FROM executors WHERE hostname = :hostname", {"hostname": hostname}
        )
        return bool(rows)

    async def list(self) -> list[Executor]:
        """Every executor, the most recently seen first."""
        rows = await self.db.fetch("SELECT * FROM executors ORDER BY last_seen_at DESC, id")
        return [Executor.from_row(row) for row in rows]

    async def forget_before(self, cutoff: datetime) -> int:
        """Drop executors not seen since `cutoff` (the janitor)."""
        rows = await self.db.fetch(
            "DELETE FROM executors WHERE last_seen_at < :cutoff RETURNING id", {"cutoff": cutoff}
        )
        return len(rows)
