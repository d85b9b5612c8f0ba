"""The worker's heartbeat: each worker process keeps a row saying which release runs its jobs.

Executors report themselves with every heartbeat; workers talk to no server, so without this
row nothing would know which release runs the background jobs (a rolling upgrade that missed
the worker shows here). One row per host and set of jobs: a restarted worker takes its row
back, and a row not seen for FORGET_AFTER is dropped by the next beat of any worker.
"""

from __future__ import annotations

import asyncio
import platform
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from offload import __version__
from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.db.values import parse_time
from offload.worker.job import WorkerContext
from offload.worker.routine import Periodic, Routine

NAME = "worker.heartbeat"
INTERVAL = timedelta(seconds=15)
# A worker not heard from for this long is shown as stopped: a few beats missed, not one.
ACTIVE_WINDOW = timedelta(seconds=60)
FORGET_AFTER = timedelta(days=7)


@dataclass(frozen=True)
class Worker:
    """One worker process as its last heartbeat described it."""

    hostname: str
    jobs: list[str]
    version: str
    git_version: str
    os: str
    architecture: str
    started_at: datetime
    last_seen_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Worker:
        """A row of the workers table."""
        started, seen = parse_time(row["started_at"]), parse_time(row["last_seen_at"])
        assert started is not None and seen is not None
        return cls(
            hostname=str(row["hostname"]),
            jobs=[j for j in str(row["jobs"]).split(",") if j],
            version=str(row["version"]),
            git_version=str(row["git_version"]),
            os=str(row["os"]),
            architecture=str(row["architecture"]),
            started_at=started,
            last_seen_at=seen,
        )

    def active(self, now: datetime, window: timedelta = ACTIVE_WINDOW) -> bool:
        """Heard from within `window`."""
        return now - self.last_seen_at <= window


async def git_version() -> str:
    """The version of the git this process runs (the syncers and reconciler use it)."""
    try:
        process = await asyncio.create_subprocess_exec(
            "git",
            "--version",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await process.communicate()
    except OSError:
        return ""
    return out.decode(errors="replace").strip().removeprefix("git version ")[:64]


class Workers:
    """The workers table."""

    def __init__(self, db: Database, *, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    async def beat(
        self,
        hostname: str,
        jobs: Sequence[str],
        *,
        version: str,
        git: str,
        started_at: datetime,
    ) -> None:
        """Record that the worker on `hostname` running `jobs` is alive, and forget old ones."""
        now = self.clock.now()
        await self.db.fetch(
            "INSERT INTO workers (hostname, jobs, version, git_version, os, architecture,"
            " started_at, last_seen_at) VALUES (:hostname, :jobs, :version, :git, :os, :arch,"
            " :started, :now) ON CONFLICT (hostname, jobs) DO UPDATE SET"
            " version = excluded.version, git_version = excluded.git_version,"
            " os = excluded.os, architecture = excluded.architecture,"
            " started_at = excluded.started_at, last_seen_at = excluded.last_seen_at",
            {
                "hostname": hostname[:255],
                "jobs": ",".join(jobs),
                "version": version[:64],
                "git": git[:64],
                "os": platform.system().lower()[:64],
                "arch": platform.machine()[:64],
                "started": started_at,
                "now": now,
            },
        )
        await self.db.fetch(
            "DELETE FROM workers WHERE last_seen_at < :cutoff", {"cutoff": now - FORGET_AFTER}
        )

    async def list(self) -> list[Worker]:
        """Every worker heard from, the most recently seen first."""
        rows = await self.db.fetch("SELECT * FROM workers ORDER BY last_seen_at DESC, id")
        return [Worker.from_row(row) for row in rows]


def build(context: WorkerContext, jobs: Sequence[str]) -> Routine:
    """The heartbeat routine of a worker running `jobs` (every worker runs one)."""
    workers = Workers(context.db, clock=context.clock)
    hostname = socket.gethostname()
    started = context.clock.now()
    git: str | None = None

    async def beat() -> None:
        nonlocal git
        if git is None:  # asked once: git is not upgraded under a running worker
            git = await git_version()
        await workers.beat(hostname, jobs, version=__version__, git=git, started_at=started)

    return Periodic(NAME, INTERVAL, beat, sleep=context.sleep)


__all__ = ["ACTIVE_WINDOW", "FORGET_AFTER", "Worker", "Workers", "build", "git_version"]
