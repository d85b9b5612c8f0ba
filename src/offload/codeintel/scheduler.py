"""`codeintel.scheduler`: every interval, queue the index jobs of the next repositories.

It takes OFFLOAD_CODEINTEL_SCHEDULER_BATCH_SIZE repositories in ranking order
(codeintel/ranking.py: never looked at first, then the longest ago; then the most used last
week; then the smallest share of precise results), leaving out those looked at within
OFFLOAD_CODEINTEL_MIN_INDEX_INTERVAL. For each it resolves the default branch's head and
queues that commit's jobs (IndexService.queue: what is queued, running or indexed for the same
root and indexer is skipped). A repository that cannot be read is logged and does not hold up
the others. Jobs someone asks for (`offload codeintel index`) skip this and run first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from offload.clock import Clock, SystemClock
from offload.codeintel import ranking
from offload.codeintel.service import IndexService, Queueing, UnknownRepository
from offload.repos.mirror import GitError, Mirrors
from offload.repos.registry import RepoRegistry
from offload.worker.routine import Periodic, Routine

if TYPE_CHECKING:
    from offload.worker.job import WorkerContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pass:
    """What one pass of the scheduler did, repository by repository."""

    queued: tuple[Queueing, ...]
    failed: tuple[tuple[str, str], ...]  # (repository, why)


class Scheduler:
    """Takes the next repositories in ranking order and queues their index jobs."""

    def __init__(
        self,
        service: IndexService,
        *,
        batch_size: int,
        min_interval: timedelta,
        clock: Clock | None = None,
    ) -> None:
        self.service = service
        self.batch_size = batch_size
        self.min_interval = min_interval
        self.clock = clock or SystemClock()

    async def run_once(self) -> Pass:
        """One pass: the next batch of repositories, in order."""
        candidates = await ranking.candidates(
            self.service.db,
            now=self.clock.now(),
            limit=self.batch_size,
            min_interval=self.min_interval,
        )
        # One after another, so that jobs are queued in ranking order (executors take
        # scheduled jobs first come, first served).
        results: list[Queueing | tuple[str, str]] = []
        for candidate in candidates:
            repo = candidate.repo_name
            try:
                results.append(
                    await self.service.queue(repo, manual=False, requested_by="scheduler")
                )
            except (UnknownRepository, GitError, ValueError) as exc:
                log.warning("codeintel.scheduler: %s: %s", repo, exc)
                results.append((repo, str(exc)))
        queued = tuple(r for r in results if isinstance(r, Queueing))
        failed = tuple(r for r in results if isinstance(r, tuple))
        if queued:
            log.info(
                "codeintel.scheduler: looked at %d repositories, queued %d index jobs",
                len(queued),
                sum(1 for q in queued for job in q.jobs if job.outcome == "queued"),
            )
        return Pass(queued, failed)


def build(context: WorkerContext) -> list[Routine]:
    """The scheduler, every OFFLOAD_CODEINTEL_SCHEDULER_INTERVAL."""
    settings = context.settings
    service = IndexService(
        context.db,
        RepoRegistry(context.db, clock=context.clock),
        Mirrors.in_data_dir(settings.data_dir),
        clock=context.clock,
    )
    scheduler = Scheduler(
        service,
        batch_size=settings.codeintel_scheduler_batch_size,
        min_interval=settings.codeintel_min_index_interval,
        clock=context.clock,
    )

    async def tick() -> None:
        await scheduler.run_once()

    return [
        Periodic(
            "codeintel.scheduler", settings.codeintel_scheduler_interval, tick, sleep=context.sleep
        )
    ]
