"""Per-job tokens: what an executor shows to act on one job (logs, outcome, git, files).

A token is random, kept only as its sha256, scoped to one job of one queue and one repository,
and deleted when the job ends. It also carries the lease of that turn, so a token minted for
an earlier turn of a job that was reset is simply gone.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.queue.record import Lease, Record


def digest(token: str) -> str:
    """The sha256 under which a token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Grant:
    """What a valid job token allows."""

    job_id: int
    queue: str
    repo: str
    holder: str
    lease_token: str

    @property
    def lease(self) -> Lease:
        """The lease the token stands for."""
        return Lease(self.queue, self.job_id, self.holder, self.lease_token)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Grant:
        """Build from a row of executor_job_tokens."""
        return cls(
            job_id=int(row["job_id"]),
            queue=row["queue"],
            repo=row["repo"],
            holder=row["holder"],
            lease_token=row["lease_token"],
        )


class JobTokens:
    """Mint, look up and revoke job tokens."""

    def __init__(self, db: Database, *, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    async def mint(self, record: Record, repo: str) -> str:
        """A fresh token for the current turn of `record` (any older one is replaced)."""
        token = secrets.token_hex(20)
        lease = record.lease
        async with self.db.transaction() as tx:
            await tx.fetch(
                "DELETE FROM executor_job_tokens WHERE job_id = :job_id AND queue = :queue",
                {"job_id": lease.id, "queue": lease.queue},
            )
            await tx.fetch(
                "INSERT INTO executor_job_tokens"
                " (value_sha256, job_id, queue, repo, holder, lease_token, created_at)"
                " VALUES (:digest, :job_id, :queue, :repo, :holder, :lease_token, :now)",
                {
                    "digest": digest(token),
                    "job_id": lease.id,
                    "queue": lease.queue,
                    "repo": repo,
                    "holder": lease.holder,
                    "lease_token": lease.token,
                    "now": self.clock.now(),
                },
            )
        return token

    async def lookup(self, token: str) -> Grant | None:
        """The grant of `token`, or None when it is unknown or was revoked."""
        rows = await self.db.fetch(
            "SELECT job_id, queue, repo, holder, lease_token FROM executor_job_tokens"
            " WHERE value_sha256 = :digest",
            {"digest": digest(token)},
        )
        return Grant.from_row(rows[0]) if rows else None

    async def revoke(self, queue: str, job_id: int) -> None:
        """Delete the token of a job that ended."""
        await self.db.fetch(
            "DELETE FROM executor_job_tokens WHERE job_id = :job_id AND queue = :queue",
            {"job_id": job_id, "queue": queue},
        )
