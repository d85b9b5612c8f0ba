"""The executors the server has heard from: registered by their heartbeats."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.db.values import decode_json, parse_time
from offload.protocol.wire import HeartbeatRequest

# An executor not heard from for this long is shown as inactive.
ACTIVE_WINDOW = timedelta(seconds=20)


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
        )

    def active(self, now: datetime, window: timedelta = ACTIVE_WINDOW) -> bool:
        """Heard from within `window`."""
        return now - self.last_seen_at <= window


class ExecutorRegistry:
    """Upsert executors on heartbeat; list them for the site admin."""

    def __init__(self, db: Database, *, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    async def heartbeat(self, beat: HeartbeatRequest, queues: list[str]) -> None:
        """Record that `beat`'s executor is alive, with what it says about itself."""
        now = self.clock.now()
        await self.db.fetch(
            "INSERT INTO executors (hostname, queues, os, architecture, executor_version,"
            " git_version, docker_version, runtime, first_seen_at, last_seen_at)"
            " VALUES (:hostname, :queues, :os, :architecture, :executor_version, :git_version,"
            " :docker_version, :runtime, :now, :now)"
            " ON CONFLICT (hostname) DO UPDATE SET queues = excluded.queues, os = excluded.os,"
            " architecture = excluded.architecture,"
            " executor_version = excluded.executor_version,"
            " git_version = excluded.git_version, docker_version = excluded.docker_version,"
            " runtime = excluded.runtime, last_seen_at = excluded.last_seen_at",
            {
                "hostname": beat.executor_name,
                "queues": queues,
                "os": beat.os,
                "architecture": beat.architecture,
                "executor_version": beat.executor_version,
                "git_version": beat.git_version,
                "docker_version": beat.docker_version,
                "runtime": beat.runtime,
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
