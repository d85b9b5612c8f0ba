"""Every job `offload worker` can run, by name: the one place a new job is registered."""

from __future__ import annotations

from offload.batches import expirer, reconciler, resolver
from offload.batches import syncer as changeset_syncer
from offload.codeintel import popularity, scheduler
from offload.codeintel.uploads import janitor as uploads_janitor
from offload.codeintel.uploads import processor as uploads_processor
from offload.identity import janitor as identity_janitor
from offload.repos import syncer
from offload.worker import janitor, queue_size, resetter
from offload.worker.job import WorkerJob

JOBS: dict[str, WorkerJob] = {
    "queues.resetter": WorkerJob(
        "Hands stalled records (no heartbeat) back to their queue.", resetter.build
    ),
    "queues.janitor": WorkerJob(
        "Deletes the old logs and records of finished jobs.", janitor.build
    ),
    "metrics.queue-size": WorkerJob(
        "Publishes records per queue and state, and the oldest wait.", queue_size.build
    ),
    "repos.syncer": WorkerJob("Refreshes repository mirrors from their sources.", syncer.build),
    "batches.resolver": WorkerJob(
        "Resolves submitted batch specs into workspaces and queues them.", resolver.build
    ),
    "batches.reconciler": WorkerJob(
        "Pushes branches and opens, updates and closes changesets.", reconciler.build
    ),
    "batches.syncer": WorkerJob(
        "Keeps published changesets in step with their code host.", changeset_syncer.build
    ),
    "batches.spec-expirer": WorkerJob(
        "Deletes batch specs that were never applied, once they are old.", expirer.build
    ),
    "codeintel.popularity": WorkerJob(
        "Folds code-navigation usage events into the repositories' ranking.", popularity.build
    ),
    "codeintel.scheduler": WorkerJob(
        "Queues the index jobs of the next repositories in ranking order.", scheduler.build
    ),
    "codeintel.uploads": WorkerJob(
        "Processes uploaded indexes into documents, symbols and ranges.", uploads_processor.build
    ),
    "codeintel.uploads-janitor": WorkerJob(
        "Deletes expired uploads and the documents no upload uses.", uploads_janitor.build
    ),
    "identity.janitor": WorkerJob(
        "Deletes ended sessions and audit entries past their retention.", identity_janitor.build
    ),
}


class UnknownJob(ValueError):
    """A job name that is not in JOBS; the message lists the valid ones."""


def select(names: list[str]) -> dict[str, WorkerJob]:
    """The jobs named (every job when `names` is empty); UnknownJob for a name not in JOBS."""
    unknown = [name for name in names if name not in JOBS]
    if unknown:
        raise UnknownJob(
            f"unknown worker job {', '.join(repr(n) for n in unknown)}; "
            f"valid jobs: {', '.join(JOBS)} (see `offload worker --list`)"
        )
    chosen = names or list(JOBS)
    return {name: JOBS[name] for name in dict.fromkeys(chosen)}


__all__ = ["JOBS", "UnknownJob", "select"]
