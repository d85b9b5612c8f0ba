"""Bundles: how many workspaces of one repository and commit an executor slot takes at once.

A bundle is checked out once and its workspaces run one after another on one slot, so it
saves a fetch and a checkout per workspace, but it also holds that slot for all of them. The
policy keeps what users see unchanged:
- at most `size` workspaces, and at most 1/`share` of the spec's waiting ones, so a small run
  still spreads over every slot;
- about `seconds` of work at most, by the spec's own recent workspace durations (a spec with
  none yet starts with bundles of two), so another user's next workspace waits no longer
  than that for a slot;
- only the user's workspaces that come before any other user's waiting one in fair order
  (batches/queue.py), so turns between users alternate as they do without bundles.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from offload.batches.queue import SPEC
from offload.db.base import Database
from offload.db.values import parse_time
from offload.dispatch.queue import Companions
from offload.protocol.wire import Job
from offload.queue.record import Record

# The queued workspace jobs of one batch spec that share a checkout with a leased one (the
# same repository, commit and fetch mode) and come before other users' turns.
_COMPANIONS = (
    "batch_spec_id = :bundle_spec AND fair_key < :bundle_before AND workspace_id IN ("
    "SELECT id FROM batch_workspaces WHERE batch_spec_id = :bundle_spec"
    " AND repo_name = :bundle_repo AND base_rev = :bundle_rev"
    " AND only_fetch_workspace = :bundle_sparse)"
)
_WAITING = (
    "SELECT COUNT(*) AS n FROM batch_workspace_jobs"
    " WHERE batch_spec_id = :spec AND state = 'queued'"
)
# The next turn of another user: the lowest fair key of their waiting workspaces.
_OTHERS = (
    "SELECT fair_key FROM batch_workspace_jobs{indexed}"
    " WHERE state IN ('queued', 'errored') AND user_name <> :user"
    " ORDER BY fair_key LIMIT 1"
)
# The spec's latest finished workspaces, for how long one takes.
_RECENT = (
    "SELECT started_at, finished_at FROM batch_workspace_jobs"
    " WHERE batch_spec_id = :spec AND state = 'completed' AND started_at IS NOT NULL"
    " ORDER BY id DESC LIMIT 16"
)
# Without another user waiting, the bound is past any key.
_NO_TURN = 2**62
# How long (seconds) what the policy read from the database stays good: dequeues come many
# times a second, and this much delay in seeing a new user or a slower step is harmless.
_FRESH = 1.0


@dataclass
class Bundles:
    """The dispatcher's Bundler for the `batches` queue (see the module's docstring)."""

    size: int = 32
    share: int = 16
    seconds: float = 5.0
    _seen: dict[tuple[str, int | str], tuple[float, float]] = field(default_factory=dict)

    async def __call__(self, record: Record, job: Job, db: Database) -> Companions | None:
        """The queued workspaces that may share `job`'s checkout; None: it goes alone."""
        if self.size <= 1:
            return None
        spec_id = int(record.fields["batch_spec_id"])
        user = str(record.fields["user_name"])
        waiting = await self._read(db, "waiting", spec_id, _WAITING, {"spec": spec_id})
        took = await self._duration(db, spec_id)
        by_time = 1 if took is None else int(self.seconds / max(took, 0.001)) - 1
        limit = min(self.size - 1, int(waiting) // self.share, by_time)
        if limit < 1:
            return None
        # The fair index answers in key order; SQLite must be told (as for the queue's head).
        indexed = f" INDEXED BY {SPEC.dequeue_index_name}" if db.dialect == "sqlite" else ""
        others = _OTHERS.format(indexed=indexed)
        before = await self._read(db, "others", user, others, {"user": user})
        return Companions(
            _COMPANIONS,
            {
                "bundle_spec": spec_id,
                "bundle_before": int(before),
                "bundle_repo": job.repository_name,
                "bundle_rev": job.commit,
                "bundle_sparse": bool(job.sparse_checkout),
            },
            limit,
        )

    async def _read(
        self, db: Database, what: str, key: int | str, sql: str, params: dict[str, object]
    ) -> float:
        """One number the policy reads, from a recent read when there is one."""
        now = time.monotonic()
        known = self._seen.get((what, key))
        if known is not None and now - known[0] < _FRESH:
            return known[1]
        rows = await db.fetch(sql, params)
        value = float(next(iter(rows[0].values()))) if rows else float(_NO_TURN)
        self._seen[(what, key)] = (now, value)
        if len(self._seen) > 10_000:  # specs and users come and go
            self._seen.clear()
        return value

    async def _duration(self, db: Database, spec_id: int) -> float | None:
        """How long one of the spec's workspaces took lately (seconds, median), if known."""
        now = time.monotonic()
        known = self._seen.get(("took", spec_id))
        if known is not None and now - known[0] < _FRESH:
            return known[1]
        rows = await db.fetch(_RECENT, {"spec": spec_id})
        spans = []
        for row in rows:
            start, end = parse_time(row["started_at"]), parse_time(row["finished_at"])
            if start is not None and end is not None:
                spans.append(max((end - start).total_seconds(), 0.0))
        if not spans:
            return None  # asked again next time: the first workspaces are about to finish
        took = statistics.median(spans)
        self._seen[("took", spec_id)] = (now, took)
        return took
