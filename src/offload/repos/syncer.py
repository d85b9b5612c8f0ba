"""`repos.syncer`: keeps every mirror level with its source and records how each sync went."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from offload.repos.mirror import GitError, Mirrors, MirrorState
from offload.repos.registry import Repo, RepoRegistry, validate_name
from offload.worker.job import WorkerContext
from offload.worker.routine import Periodic, Routine

log = logging.getLogger(__name__)

# Fetches wait on the network far more than on this machine; a few at once is plenty.
DEFAULT_CONCURRENCY = 4


class SyncFailed(RuntimeError):
    """A repository could not be mirrored; the message has git's own words."""


@dataclass(frozen=True)
class SyncOutcome:
    """How one repository's sync went."""

    name: str
    state: MirrorState | None
    error: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether the mirror is now level with its source."""
        return self.error is None


class Syncer:
    """Adds repositories (mirroring them at once) and refreshes their mirrors."""

    def __init__(
        self,
        registry: RepoRegistry,
        mirrors: Mirrors,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.registry = registry
        self.mirrors = mirrors
        self.concurrency = concurrency

    async def add(self, source: str, *, name: str | None = None) -> Repo:
        """Register `source` and mirror it now; on failure nothing stays registered."""
        repo = await self.registry.add(source, name=name)
        outcome = await self.sync(repo)
        if outcome.error is not None:
            await self.registry.remove(repo.name)
            await self.mirrors.remove(repo.name)
            raise SyncFailed(f"cannot mirror {repo.display_source} as {repo.name}: {outcome.error}")
        return await self.registry.require(repo.name)

    async def remove(self, name: str) -> bool:
        """Forget `name` and delete its mirror; False when no such repository was registered."""
        validate_name(name)
        removed = await self.registry.remove(name)
        await self.mirrors.remove(name)
        return removed

    async def sync(self, repo: Repo) -> SyncOutcome:
        """Fetch `repo` from its source and record the result; never raises for git's failures."""
        started = time.monotonic()
        try:
            state = await self.mirrors.sync(repo.name, repo.source)
        except (GitError, OSError) as exc:
            error = str(exc)
            log.warning(
                "repository %s: sync failed: %s",
                repo.name,
                error,
                extra={"repo": repo.name},
            )
            await self.registry.record_failure(repo.name, error)
            return SyncOutcome(repo.name, None, error, time.monotonic() - started)
        await self.registry.record_success(
            repo.name, default_branch=state.default_branch, head_commit=state.head_commit
        )
        return SyncOutcome(repo.name, state, None, time.monotonic() - started)

    async def sync_all(
        self,
        repos: Sequence[Repo] | None = None,
        *,
        on_done: Callable[[SyncOutcome], None] | None = None,
    ) -> list[SyncOutcome]:
        """Sync `repos` (every registered one by default), a few at a time, in name order.

        One failing repository never stops the others; `on_done` hears of each as it ends.
        """
        chosen = list(repos) if repos is not None else await self.registry.list()
        gate = asyncio.Semaphore(max(self.concurrency, 1))

        async def one(repo: Repo) -> SyncOutcome:
            async with gate:
                outcome = await self.sync(repo)
            if on_done is not None:
                on_done(outcome)
            return outcome

        return list(await asyncio.gather(*(one(repo) for repo in chosen)))


async def sync_pass(syncer: Syncer) -> None:
    """One pass of the worker job over every repository."""
    outcomes = await syncer.sync_all()
    failed = [o.name for o in outcomes if not o.ok]
    if failed:
        log.warning(
            "%d of %d repositories failed to sync: %s",
            len(failed),
            len(outcomes),
            ", ".join(failed),
            extra={"failed": failed},
        )


def build(context: WorkerContext) -> list[Routine]:
    """One periodic routine that syncs every mirror each OFFLOAD_REPOS_SYNC_INTERVAL."""
    syncer = Syncer(
        RepoRegistry(context.db, clock=context.clock),
        Mirrors.in_data_dir(context.settings.data_dir),
    )
    return [
        Periodic(
            "repos.syncer",
            context.settings.repos_sync_interval,
            lambda: sync_pass(syncer),
            sleep=context.sleep,
        )
    ]


__all__ = ["SyncFailed", "SyncOutcome", "Syncer", "build", "sync_pass"]
