"""`batches.syncer`: keeps the state of published changesets current (open, merged, reviews...)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from offload.batches.changesets import STATE_TIMES, ChangesetRow
from offload.batches.reconciler import code_hosts
from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.repos.codehosts.base import CodeHostError
from offload.repos.codehosts.hosts import CodeHosts
from offload.repos.mirror import Mirrors
from offload.worker.routine import Periodic, Routine

if TYPE_CHECKING:
    from offload.worker.job import WorkerContext

log = logging.getLogger(__name__)

# Changesets whose pull request may still change: open or draft, and not detached.
_LIVE = (
    "SELECT * FROM changesets WHERE external_id IS NOT NULL AND NOT detached "
    "AND external_state IN ('open', 'draft') AND state IN ('completed', 'failed') "
    "ORDER BY synced_at, id"
)


class ChangesetSyncer:
    """Reads each live pull request from its host and stores what changed."""

    def __init__(self, db: Database, hosts: CodeHosts, *, clock: Clock | None = None) -> None:
        self.db = db
        self.hosts = hosts
        self.clock = clock or SystemClock()

    async def sync_all(self) -> int:
        """One pass over every live changeset; how many changed state."""
        changed = 0
        for row in await self.db.fetch(_LIVE):
            changeset = ChangesetRow.from_row(row)
            try:
                host = await self.hosts.for_repo(changeset.repo_name)
                pr = await host.get(changeset.repo_name, str(changeset.external_id))
            except CodeHostError as exc:
                log.warning(
                    "cannot sync changeset %s of %s: %s", changeset.id, changeset.repo_name, exc
                )
                continue
            if pr.state != changeset.external_state:
                changed += 1
            await self.db.fetch(
                "UPDATE changesets SET external_state = :external_state, review_state = :review, "
                f"checks_state = :checks, external_url = :url, synced_at = :now, {STATE_TIMES} "
                "WHERE id = :id",
                {
                    "external_state": pr.state,
                    "review": pr.review_state,
                    "checks": pr.checks_state,
                    "url": pr.url,
                    "now": self.clock.now(),
                    "id": changeset.id,
                },
            )
        return changed


def build(context: WorkerContext) -> list[Routine]:
    """One periodic pass every OFFLOAD_BATCHES_SYNC_INTERVAL."""
    hosts = code_hosts(context, Mirrors.in_data_dir(context.settings.data_dir))
    syncer = ChangesetSyncer(context.db, hosts, clock=context.clock)

    async def one_pass() -> None:
        await syncer.sync_all()

    return [
        Periodic(
            "batches.syncer", context.settings.batches_sync_interval, one_pass, sleep=context.sleep
        )
    ]
