"""IndexService: what the API, the CLI and the scheduler do with index jobs.

Queueing a commit chooses its jobs (`select_jobs`: the configuration stored for the repository,
else its `sourcegraph.yaml`, else inference), skips each job whose repository, commit, root
and indexer is already queued, running or indexed, and writes what it read (where the jobs
came from, a configuration's errors with line and column) on the repository's status. A job
someone asks for runs before every scheduled one; asking for one already waiting moves it
ahead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from offload.clock import Clock, SystemClock
from offload.codeintel.config import ConfigErrors, parse_config
from offload.codeintel.inference import Selection, select_jobs
from offload.codeintel.queue import MANUAL, SCHEDULED
from offload.codeintel.queue import SPEC as INDEX_JOBS
from offload.codeintel.transform import indexer_name
from offload.codeintel.tree import GitTree
from offload.db.base import Database, Row
from offload.db.values import decode_json, parse_time
from offload.queue.store import SqlQueueStore
from offload.repos.mirror import GitError, Mirrors
from offload.repos.registry import RepoRegistry

# How the API and the status name where a selection's jobs came from.
SOURCES = {
    "explicit": "configuration",
    "sourcegraph.yaml": "sourcegraph.yaml",
    "inference": "inferred",
}

# Full commit ids resolve() remembers having found (the least recently asked go first).
KNOWN_COMMITS = 4096

# A (repository, commit, root, indexer) in one of these states is not queued again.
_EXISTING = f"""
SELECT id, state, priority FROM {INDEX_JOBS.table}
WHERE repo_name = :repo AND commit_sha = :commit AND root = :root AND indexer = :indexer
  AND state IN ('queued', 'errored', 'processing', 'completed')
ORDER BY id DESC LIMIT 1
"""
_STATUS_UPSERT = """
INSERT INTO codeintel_repo_status (repo_name, last_scanned_at, last_queued_at, last_commit,
    source, errors, notes)
VALUES (:repo, :now, :queued_at, :commit, :source, :errors, :notes)
ON CONFLICT (repo_name) DO UPDATE SET last_scanned_at = :now,
    last_queued_at = COALESCE(:queued_at, codeintel_repo_status.last_queued_at),
    last_commit = :commit, source = :source, errors = :errors, notes = :notes
"""


class UnknownRepository(LookupError):
    """A repository or revision that the server does not have; the message says which."""


@dataclass(frozen=True)
class Queued:
    """One job of a queueing: its id, root and indexer, and whether it was already there."""

    id: int
    root: str
    indexer: str
    outcome: str  # queued | moved ahead | already queued | already indexed | running


@dataclass(frozen=True)
class Queueing:
    """What queueing a commit did."""

    repo: str
    commit: str
    source: str
    jobs: tuple[Queued, ...]
    errors: tuple[dict[str, Any], ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class IndexJobRow:
    """An index job as listings show it."""

    id: int
    repo: str
    commit: str
    root: str
    indexer: str
    state: str
    source: str
    priority: int
    requested_by: str
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    failure_message: str | None
    upload_id: int | None
    job: dict[str, Any]

    @classmethod
    def from_row(cls, row: Row) -> IndexJobRow:
        """Build from a codeintel_index_jobs row."""
        return cls(
            id=int(row["id"]),
            repo=str(row["repo_name"]),
            commit=str(row["commit_sha"]),
            root=str(row["root"]),
            indexer=str(row["indexer"]),
            state=str(row["state"]),
            source=str(row["source"]),
            priority=int(row["priority"]),
            requested_by=str(row["requested_by"]),
            queued_at=parse_time(row["queued_at"]),
            started_at=parse_time(row["started_at"]),
            finished_at=parse_time(row["finished_at"]),
            failure_message=row["failure_message"],
            upload_id=int(row["upload_id"]) if row["upload_id"] is not None else None,
            job=dict(decode_json(row["job"]) or {}),
        )

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        return {
            "id": self.id,
            "repo": self.repo,
            "commit": self.commit,
            "root": self.root,
            "indexer": self.indexer,
            "state": self.state,
            "source": self.source,
            "manual": self.priority == MANUAL,
            "requestedBy": self.requested_by,
            "queuedAt": _iso(self.queued_at),
            "startedAt": _iso(self.started_at),
            "finishedAt": _iso(self.finished_at),
            "failureMessage": self.failure_message,
            "uploadId": self.upload_id,
        }


@dataclass(frozen=True)
class RepoStatus:
    """What the scheduler last read of a repository, and its configuration's errors."""

    repo: str
    last_scanned_at: datetime | None
    last_queued_at: datetime | None
    last_commit: str | None
    source: str | None
    errors: tuple[dict[str, Any], ...]
    notes: tuple[str, ...]

    @classmethod
    def from_row(cls, row: Row) -> RepoStatus:
        """Build from a codeintel_repo_status row."""
        return cls(
            repo=str(row["repo_name"]),
            last_scanned_at=parse_time(row["last_scanned_at"]),
            last_queued_at=parse_time(row["last_queued_at"]),
            last_commit=row["last_commit"],
            source=row["source"],
            errors=tuple(decode_json(row["errors"]) or ()),
            notes=tuple(decode_json(row["notes"]) or ()),
        )

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        return {
            "repo": self.repo,
            "lastScannedAt": _iso(self.last_scanned_at),
            "lastQueuedAt": _iso(self.last_queued_at),
            "lastCommit": self.last_commit,
            "source": self.source,
            "errors": list(self.errors),
            "notes": list(self.notes),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def errors_json(selection: Selection) -> tuple[dict[str, Any], ...]:
    """A selection's configuration errors as the API and the status show them."""
    errors = selection.errors.errors if selection.errors else []
    source = selection.errors.source if selection.errors else ""
    return tuple(
        {"file": source, "line": e.line, "column": e.column, "path": e.path, "message": e.message}
        for e in errors
    )


class IndexService:
    """Configuration, queueing and listings of index jobs."""

    def __init__(
        self,
        db: Database,
        repos: RepoRegistry,
        mirrors: Mirrors,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.db = db
        self.repos = repos
        self.mirrors = mirrors
        self.clock = clock or SystemClock()
        self.store = SqlQueueStore(db, INDEX_JOBS, clock=self.clock)
        self._known_commits: OrderedDict[tuple[str, str], None] = OrderedDict()

    # -- configuration --------------------------------------------------------------------

    async def config(self, repo: str) -> str | None:
        """The configuration stored for `repo`, if any."""
        rows = await self.db.fetch(
            "SELECT config FROM codeintel_configs WHERE repo_name = :repo", {"repo": repo}
        )
        return str(rows[0]["config"]) if rows else None

    async def set_config(self, repo: str, text: str, *, by: str) -> int:
        """Store `text` as `repo`'s configuration (ConfigErrors, with line and column, if it
        is not valid; UnknownRepository); how many jobs it describes."""
        await self._require(repo)
        jobs = parse_config(text, source="configuration")
        await self.db.fetch(
            "INSERT INTO codeintel_configs (repo_name, config, updated_at, updated_by)"
            " VALUES (:repo, :config, :now, :by) ON CONFLICT (repo_name) DO UPDATE"
            " SET config = :config, updated_at = :now, updated_by = :by",
            {"repo": repo, "config": text, "now": self.clock.now(), "by": by},
        )
        return len(jobs)

    async def delete_config(self, repo: str) -> bool:
        """Forget `repo`'s configuration; False if it had none."""
        rows = await self.db.fetch(
            "DELETE FROM codeintel_configs WHERE repo_name = :repo RETURNING repo_name",
            {"repo": repo},
        )
        return bool(rows)

    # -- queueing -------------------------------------------------------------------------

    async def resolve(self, repo: str, rev: str | None) -> str:
        """The commit `rev` (default: the head of the default branch) names in `repo`."""
        await self._require(repo)
        # A full commit id found once is found again (commits do not change): code navigation
        # asks for the same few commits thousands of times, and git costs milliseconds each.
        if rev is not None and (repo, rev) in self._known_commits:
            self._known_commits.move_to_end((repo, rev))
            return rev
        try:
            commit = await self.mirrors.resolve(repo, rev or "HEAD")
        except GitError as exc:
            raise UnknownRepository(str(exc)) from exc
        if commit is None:
            raise UnknownRepository(
                f"repository {repo} has no revision {rev or 'HEAD'!r}; give a branch, tag or commit"
            )
        if rev == commit:
            self._known_commits[(repo, commit)] = None
            if len(self._known_commits) > KNOWN_COMMITS:
                self._known_commits.popitem(last=False)
        return commit

    async def select(self, repo: str, commit: str) -> Selection:
        """The jobs `commit` gets, and from where (GitError if the mirror cannot be read)."""
        explicit = await self.config(repo)
        return await select_jobs(explicit, GitTree(self.mirrors.path(repo), commit))

    async def queue(
        self, repo: str, rev: str | None = None, *, manual: bool, requested_by: str = ""
    ) -> Queueing:
        """Queue `repo` at `rev`'s index jobs (see the module's docstring)."""
        commit = await self.resolve(repo, rev)
        selection = await self.select(repo, commit)
        done: list[Queued] = []
        for job in selection.jobs:
            done.append(
                await self._queue_one(repo, commit, job.payload(), selection, manual, requested_by)
            )
        errors = errors_json(selection)
        await self.db.fetch(
            _STATUS_UPSERT,
            {
                "repo": repo,
                "now": self.clock.now(),
                # Looked at now, whatever it found: the scheduler leaves it alone for the
                # minimum interval, and takes the repositories it saw longest ago first.
                "queued_at": self.clock.now(),
                "commit": commit,
                "source": SOURCES[selection.source],
                "errors": list(errors),
                "notes": list(selection.notes),
            },
        )
        return Queueing(
            repo, commit, SOURCES[selection.source], tuple(done), errors, selection.notes
        )

    async def _queue_one(
        self,
        repo: str,
        commit: str,
        payload: dict[str, Any],
        selection: Selection,
        manual: bool,
        requested_by: str,
    ) -> Queued:
        root = str(payload["root"] or "")
        indexer = indexer_name(str(payload["indexer"]))
        key = {"repo": repo, "commit": commit, "root": root, "indexer": indexer}
        existing = await self.db.fetch(_EXISTING, key)
        if existing:
            row = existing[0]
            state, job_id = str(row["state"]), int(row["id"])
            if state == "completed":
                if not manual:
                    return Queued(job_id, root, indexer, "already indexed")
            elif state == "processing":
                return Queued(job_id, root, indexer, "running")
            elif manual and int(row["priority"]) != MANUAL:
                await self.db.fetch(
                    f"UPDATE {INDEX_JOBS.table} SET priority = :p WHERE id = :id",
                    {"p": MANUAL, "id": job_id},
                )
                return Queued(job_id, root, indexer, "moved ahead")
            else:
                return Queued(job_id, root, indexer, "already queued")
        job_id = await self.store.enqueue(
            {
                "repo_name": repo,
                "commit_sha": commit,
                "root": root,
                "indexer": indexer,
                "job": payload,
                "source": SOURCES[selection.source],
                "priority": MANUAL if manual else SCHEDULED,
                "requested_by": requested_by,
                "upload_id": None,
            }
        )
        return Queued(job_id, root, indexer, "queued")

    # -- reading --------------------------------------------------------------------------

    async def status(self, repo: str) -> RepoStatus | None:
        """What the scheduler last read of `repo` (None: never looked at)."""
        rows = await self.db.fetch(
            "SELECT * FROM codeintel_repo_status WHERE repo_name = :repo", {"repo": repo}
        )
        return RepoStatus.from_row(rows[0]) if rows else None

    async def index_jobs(
        self,
        *,
        repo: str | None = None,
        states: Sequence[str] = (),
        limit: int = 50,
        before: int | None = None,
    ) -> list[IndexJobRow]:
        """Index jobs, newest first, a page at a time (ids below `before`)."""
        where: list[str] = ["1 = 1"]
        params: dict[str, Any] = {"limit": limit}
        if repo is not None:
            where.append("repo_name = :repo")
            params["repo"] = repo
        if states:
            where.append("state IN (" + ", ".join(f":s{i}" for i in range(len(states))) + ")")
            params.update({f"s{i}": s for i, s in enumerate(states)})
        if before is not None:
            where.append("id < :before")
            params["before"] = before
        rows = await self.db.fetch(
            f"SELECT * FROM {INDEX_JOBS.table} WHERE {' AND '.join(where)}"
            " ORDER BY id DESC LIMIT :limit",
            params,
        )
        return [IndexJobRow.from_row(r) for r in rows]

    async def index_job(self, job_id: int) -> IndexJobRow | None:
        """One index job."""
        rows = await self.db.fetch(
            f"SELECT * FROM {INDEX_JOBS.table} WHERE id = :id", {"id": job_id}
        )
        return IndexJobRow.from_row(rows[0]) if rows else None

    async def _require(self, repo: str) -> None:
        if await self.repos.get(repo) is None:
            raise UnknownRepository(
                f"no repository named {repo!r} is registered; see `offload repos list`"
            )


__all__ = [
    "SOURCES",
    "ConfigErrors",
    "IndexJobRow",
    "IndexService",
    "Queued",
    "Queueing",
    "RepoStatus",
    "UnknownRepository",
]
