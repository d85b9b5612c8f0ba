"""`batches.resolver`: turns a submitted batch spec into workspaces and queues their execution.

Repositories come from `on` (a named repository and branch(es), or a search query over the
mirrors); a repository holding a `.batchignore` at its root is kept but marked ignored.
`workspaces` splits matching repositories into one workspace per directory that holds the
marker file. Each workspace's steps are looked up in the step cache: fully cached ones get
their changeset specs at once, the others are queued in the `batches` queue, starting after
their last cached step.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import posixpath
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from offload.batches.queue import BatchQueue, WorkspaceJob
from offload.batches.results import Results
from offload.batches.spec.limits import MAX_WORKSPACES, RESOLUTION_DEADLINE
from offload.batches.spec.model import BatchSpec, OnQuery, OnRepository, SpecErrors, WorkspaceConfig
from offload.batches.spec.workers import SpecWorkers, shared
from offload.batches.store import RESOLUTIONS, BatchStore, NewWorkspace
from offload.batches.template.engine import is_static
from offload.clock import Clock
from offload.db.base import Database
from offload.queue.consumer import Consumer, JobFailed
from offload.queue.record import Record
from offload.queue.spec import QueueSpec
from offload.queue.store import SqlQueueStore
from offload.repos.mirror import GitError, Mirrors, run_git
from offload.repos.registry import RepoRegistry
from offload.repos.search import RepoTarget, search
from offload.repos.search_query import QueryError, parse_query
from offload.secrets.store import Secrets
from offload.worker.routine import ConsumerRoutine, Routine

if TYPE_CHECKING:
    from offload.worker.job import WorkerContext

log = logging.getLogger(__name__)

SPEC = QueueSpec(
    name=RESOLUTIONS,
    table="batch_resolution_jobs",
    columns=("batch_spec_id",),
    stalled_after=timedelta(seconds=60),
    max_resets=3,
    max_retries=0,
    retention=None,
)

IGNORE_FILE = ".batchignore"


class ResolveError(ValueError):
    """The spec names something that does not exist; the message says which field and what."""


def _skipped(spec: BatchSpec) -> bool:
    """Whether every step has an `if` that is false before anything runs."""

    def static_false(cond: bool | str | None) -> bool:
        if isinstance(cond, bool):
            return not cond
        return cond is not None and cond != "" and is_static(cond) and cond.strip() != "true"

    return bool(spec.steps) and all(static_false(s.if_) for s in spec.steps)


class Resolver:
    """Resolves one spec at a time: the handler of the `batch_resolutions` queue."""

    def __init__(
        self,
        db: Database,
        registry: RepoRegistry,
        mirrors: Mirrors,
        *,
        secrets: Secrets,
        clock: Clock | None = None,
        workers: SpecWorkers | None = None,
        deadline: float = RESOLUTION_DEADLINE,
        max_workspaces: int = MAX_WORKSPACES,
    ) -> None:
        self.db = db
        # The spec is parsed in a worker process: the loop keeps this job's heartbeats going.
        self.workers = workers or shared()
        self.deadline = deadline
        self.max_workspaces = max_workspaces
        self.registry = registry
        self.mirrors = mirrors
        self.store = BatchStore(db, clock)
        self.queue = BatchQueue(db)
        self.cache = Results(db, secrets, self.store)

    async def handle(self, record: Record) -> None:
        """Resolve the spec of `record`; a spec that names unknown things fails for good."""
        row = await self.store.spec(int(record.fields["batch_spec_id"]))
        if row is None:
            raise JobFailed(f"batch spec {record.fields['batch_spec_id']} no longer exists")
        try:
            spec = await self.workers.parse(row.raw_spec, row.name)
        except SpecErrors as exc:
            raise JobFailed(f"the batch spec cannot be resolved: {exc}") from exc
        deadline = asyncio.timeout(self.deadline)
        try:
            async with deadline:
                found = await self.workspaces(spec)
        except (ResolveError, QueryError) as exc:
            raise JobFailed(str(exc)) from exc
        except TimeoutError:
            if not deadline.expired():
                raise
            raise JobFailed(
                f"resolving the batch spec took longer than {self.deadline:g}s, the limit "
                "(RESOLUTION_DEADLINE); narrow its `on` or `workspaces`"
            ) from None
        rows = await self.store.add_workspaces(row.id, found)
        await self.cache.import_specs(row, spec)
        runnable = [w for w in rows if not (w.ignored or w.skipped)]
        pending = await self.cache.apply(row, spec, runnable)
        if not row.runs_locally:  # else the user's CLI claims them one by one
            await self.queue.enqueue(row.user_name, [WorkspaceJob(row.id, w.id) for w in pending])
        log.info(
            "resolved batch spec %s: %d workspaces, %d %s, %d answered from the cache",
            row.rand_id,
            len(rows),
            len(pending),
            "left to the user's machine" if row.runs_locally else "queued",
            len(runnable) - len(pending),
        )

    async def workspaces(self, spec: BatchSpec) -> list[NewWorkspace]:
        """Every workspace of `spec`, sorted by repository, path and branch."""
        if not spec.steps:
            return []
        targets: dict[tuple[str, str], tuple[str, set[str]]] = {}
        for index, on in enumerate(spec.on):
            if isinstance(on, OnRepository):
                for branch, commit in await self._repository(index, on):
                    targets.setdefault((on.repository, branch), (commit, set()))
            else:
                for name, branch, commit, matched in await self._query(index, on):
                    entry = targets.setdefault((name, branch), (commit, set()))
                    entry[1].update(matched)
            self._check_workspaces(len(targets))
        skipped = _skipped(spec)
        out: list[NewWorkspace] = []
        for (name, branch), (commit, paths) in sorted(targets.items()):
            ignored = await self._has_file(name, commit, IGNORE_FILE)
            config = self._config(spec.workspaces, name)
            dirs = [""] if config is None else await self._roots(name, commit, config)
            self._check_workspaces(len(out) + len(dirs))
            for path in dirs:
                matches = sorted(p for p in paths if _inside(p, path))
                out.append(
                    NewWorkspace(
                        repo_name=name,
                        branch=branch,
                        commit=commit,
                        path=path,
                        file_matches=tuple(matches),
                        only_fetch_workspace=bool(config and config.only_fetch_workspace),
                        ignored=ignored,
                        skipped=skipped,
                    )
                )
        out.sort(key=lambda w: (w.repo_name, w.path, w.branch))
        return out

    def _check_workspaces(self, count: int) -> None:
        if count > self.max_workspaces:
            raise ResolveError(
                f"the batch spec resolves to more than {self.max_workspaces:,} workspaces, the "
                "limit (MAX_WORKSPACES); narrow its `on` or `workspaces`, or split the spec"
            )

    async def _repository(self, index: int, on: OnRepository) -> list[tuple[str, str]]:
        repo = await self.registry.get(on.repository)
        if repo is None or not self.mirrors.exists(on.repository):
            raise ResolveError(
                f"on[{index}].repository: no repository named {on.repository!r} is mirrored "
                "here; add it with `offload repos add`"
            )
        branches = list(on.requested_branches())
        if not branches:
            default = await self.mirrors.default_branch(on.repository)
            if default is None:
                raise ResolveError(f"on[{index}].repository: {on.repository} has no commits yet")
            branches = [default]
        out = []
        for branch in branches:
            commit = await self.mirrors.resolve(on.repository, f"refs/heads/{branch}")
            if commit is None:
                raise ResolveError(
                    f"on[{index}].branch: repository {on.repository} has no branch {branch!r}"
                )
            out.append((branch, commit))
        return out

    async def _query(self, index: int, on: OnQuery) -> list[tuple[str, str, str, tuple[str, ...]]]:
        try:
            query = parse_query(on.repositories_matching_query)
        except QueryError as exc:
            raise ResolveError(f"on[{index}].repositoriesMatchingQuery: {exc}") from exc
        targets = []
        branches = {}
        for repo in await self.registry.list():
            if not self.mirrors.exists(repo.name):
                continue
            state = await self.mirrors.state(repo.name)
            if state.head_commit is None or state.default_branch is None:
                continue
            targets.append(RepoTarget(repo.name, state.head_commit))
            branches[repo.name] = state.default_branch
        matches = await search(query, targets, self.mirrors)
        return [(m.name, branches[m.name], m.commit, m.paths) for m in matches]

    def _config(self, configs: Sequence[WorkspaceConfig], name: str) -> WorkspaceConfig | None:
        matching = [c for c in configs if fnmatch.fnmatchcase(name, c.in_)]
        if len(matching) > 1:
            raise ResolveError(
                f"workspaces: repository {name} matches more than one `in` glob "
                f"({', '.join(c.in_ for c in matching)}); make them exclusive"
            )
        return matching[0] if matching else None

    async def _roots(self, name: str, commit: str, config: WorkspaceConfig) -> list[str]:
        listing = await run_git(
            ["ls-tree", "-r", "--name-only", "-z", commit], cwd=self.mirrors.existing(name)
        )
        dirs = {
            posixpath.dirname(path)
            for path in listing.split("\0")
            if path and posixpath.basename(path) == config.root_at_location_of
        }
        return sorted(dirs)

    async def _has_file(self, name: str, commit: str, path: str) -> bool:
        try:
            await run_git(["cat-file", "-e", f"{commit}:{path}"], cwd=self.mirrors.existing(name))
        except GitError:
            return False
        return True


def _inside(path: str, directory: str) -> bool:
    return directory == "" or path.startswith(directory.rstrip("/") + "/")


def build(context: WorkerContext) -> list[Routine]:
    """One consumer of the resolution queue."""
    store = SqlQueueStore(context.db, SPEC, clock=context.clock)
    resolver = Resolver(
        context.db,
        RepoRegistry(context.db, clock=context.clock),
        Mirrors.in_data_dir(context.settings.data_dir),
        secrets=context.secrets,
        clock=context.clock,
    )
    return [
        ConsumerRoutine(
            "batches.resolver",
            lambda: Consumer(store, resolver, holder="batches.resolver", slots=2, poll_wait=5.0),
        )
    ]
