"""Idempotency keys of job submissions: a retried POST /api/jobs returns the job it made.

A client that lost the answer to a submission cannot tell whether the job was made; it sends
the same `Idempotency-Key` again. A key belongs to the user who sent it (another user's same
key is unrelated), is bound to the submission it first came with, and is forgotten after
KEY_TTL. The first request claims the key before it makes the job, so two retries that race
make one job: the second is told the first is still under way (KeyInFlight).
"""

from __future__ import annotations

from datetime import timedelta

from offload.clock import Clock, SystemClock
from offload.db.base import Database

KEY_TTL = timedelta(hours=24)
# A claim whose job never came (its server stopped mid-submission) is taken over after this.
CLAIM_TIMEOUT = timedelta(seconds=60)

_CLAIM = """
INSERT INTO job_submission_keys (submitted_by, key, request_sha256, created_at)
VALUES (:user, :key, :digest, :now)
ON CONFLICT (submitted_by, key) DO NOTHING
RETURNING id
"""
_TAKE_OVER = """
UPDATE job_submission_keys SET created_at = :now
WHERE id = :id AND job_id IS NULL AND created_at < :stale
RETURNING id
"""


class KeyReused(ValueError):
    """The user sent the key before with a different submission."""


class KeyInFlight(LookupError):
    """The first submission with the key is still being made."""


class SubmissionKeys:
    """Claims, settles and looks up the idempotency keys of job submissions."""

    def __init__(
        self, db: Database, *, clock: Clock | None = None, ttl: timedelta = KEY_TTL
    ) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        self.ttl = ttl

    async def claim(self, user: str, key: str, digest: str) -> int | None:
        """None: the key is the caller's to make the job with (then `settle` or `drop` it);
        else the id of the job an earlier submission with the key made."""
        now = self.clock.now()
        # Expired keys go first, so a key is free again after the TTL (the index keeps it cheap).
        await self.db.fetch(
            "DELETE FROM job_submission_keys WHERE created_at < :cutoff", {"cutoff": now - self.ttl}
        )
        params = {"user": user, "key": key, "digest": digest, "now": now}
        # Twice at most: the row may vanish between the insert and the read (dropped by a
        # failed first submission), and then the key is free for this one.
        for _ in range(2):
            if await self.db.fetch(_CLAIM, params):
                return None
            rows = await self.db.fetch(
                "SELECT id, request_sha256, job_id FROM job_submission_keys"
                " WHERE submitted_by = :user AND key = :key",
                {"user": user, "key": key},
            )
            if not rows:
                continue
            row = rows[0]
            if row["request_sha256"] != digest:
                raise KeyReused(
                    f"Idempotency-Key {key!r} was already used for a different job submission; "
                    "send a new key for a new submission"
                )
            if row["job_id"] is not None:
                return int(row["job_id"])
            stale = {"id": row["id"], "now": now, "stale": now - CLAIM_TIMEOUT}
            if await self.db.fetch(_TAKE_OVER, stale):
                return None
            break
        raise KeyInFlight(
            f"a submission with Idempotency-Key {key!r} is still being made; "
            "retry in a few seconds to get its job"
        )

    async def settle(self, user: str, key: str, job_id: int) -> None:
        """Record the job the claimed key made."""
        await self.db.fetch(
            "UPDATE job_submission_keys SET job_id = :job"
            " WHERE submitted_by = :user AND key = :key",
            {"job": job_id, "user": user, "key": key},
        )

    async def drop(self, user: str, key: str) -> None:
        """Free a claimed key whose submission was refused (a corrected retry may use it)."""
        await self.db.fetch(
            "DELETE FROM job_submission_keys"
            " WHERE submitted_by = :user AND key = :key AND job_id IS NULL",
            {"user": user, "key": key},
        )
