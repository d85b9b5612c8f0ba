"""Provenance: which earlier run produced the step results the cache answered a workspace with.

A workspace the step cache answers runs no job of its own, so its logs are those of the run
that wrote the cache entry: the entry keeps its job's id (batch_step_cache.job_id). The job,
its batch spec and its logs may have expired since (batches.spec-expirer) while the entry
lives on; then only the job's id and the entry's time are left to show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from offload.batches.execution import StepKeys, secret_names
from offload.batches.store import BatchSpecRow, BatchStore, WorkspaceRow
from offload.db.base import Database
from offload.db.values import parse_time
from offload.queue.record import LogEntry
from offload.queue.store import SqlQueueStore
from offload.secrets.cipher import CipherError
from offload.secrets.store import Secrets, UnknownSecret

# The cache entries among the keys, each with the job that wrote it, if that job still exists.
_PRODUCERS = """
SELECT c.key, c.job_id, c.created_at, j.id AS found_job, s.rand_id, w.repo_name, w.path
FROM batch_step_cache c
LEFT JOIN batch_workspace_jobs j ON j.id = c.job_id
LEFT JOIN batch_specs s ON s.id = j.batch_spec_id
LEFT JOIN batch_workspaces w ON w.id = j.workspace_id
WHERE c.user_name = :user AND c.key IN ({keys})
"""
# Keys per statement.
_CHUNK = 400


@dataclass(frozen=True)
class Producer:
    """The run whose results answered a workspace's first `steps` steps."""

    steps: int
    found: bool  # False: the cache entry went away (expired, or the secrets it read changed)
    job_id: int | None = None  # None: written before offload kept the producing job
    spec: str | None = None  # the producing batch spec's id; None once it expired
    repo: str | None = None
    path: str | None = None
    at: datetime | None = None
    logs: tuple[LogEntry, ...] | None = None  # None: the run's logs expired

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        return {
            "steps": self.steps,
            "found": self.found,
            "job": self.job_id,
            "spec": self.spec,
            "repo": self.repo,
            "path": self.path,
            "at": self.at.isoformat() if self.at else None,
            "expired": self.logs is None,
            "logs": None if self.logs is None else [log_json(e) for e in self.logs],
        }


def log_json(entry: LogEntry) -> dict[str, Any]:
    """A log entry as the batch logs route shows it."""
    return {
        "key": entry.key,
        "command": entry.command,
        "exitCode": entry.exit_code,
        "out": entry.out,
    }


class Provenance:
    """Finds the producing runs of cached workspaces' results."""

    def __init__(
        self,
        db: Database,
        store: BatchStore,
        executions: SqlQueueStore,
        secrets: Secrets | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.executions = executions
        # The keys cover the secrets' values; without the store only secret-free specs resolve.
        self.secrets = secrets

    async def _keys(self, row: BatchSpecRow) -> StepKeys | None:
        spec = await row.parsed()
        names = secret_names(spec.steps)
        values: Mapping[str, str] = {}
        if names:
            if self.secrets is None:
                return None
            try:
                values = await self.secrets.values_for_keys(row.user_name, names)
            except (UnknownSecret, CipherError):
                return None  # they changed since: no entry can be found by them
        return StepKeys(spec, values, await self.store.file_digests(row.id))

    async def producers(
        self, row: BatchSpecRow, workspaces: Sequence[WorkspaceRow]
    ) -> dict[int, Producer]:
        """By workspace id: who produced the cached steps of each workspace that had some."""
        cached = [w for w in workspaces if w.cached_steps > 0]
        if not cached:
            return {}
        step_keys = await self._keys(row)
        if step_keys is None:
            return {w.id: Producer(steps=w.cached_steps, found=False) for w in cached}
        wanted = {w.id: step_keys(w)[w.cached_steps - 1] for w in cached}
        entries = await self._entries(row.user_name, sorted(set(wanted.values())))
        logs: dict[int, tuple[LogEntry, ...]] = {}
        out: dict[int, Producer] = {}
        for w in cached:
            entry = entries.get(wanted[w.id])
            if entry is None:
                out[w.id] = Producer(steps=w.cached_steps, found=False)
                continue
            job = entry["found_job"]
            if job is not None and int(job) not in logs:
                logs[int(job)] = tuple(await self.executions.logs(int(job)))
            out[w.id] = Producer(
                steps=w.cached_steps,
                found=True,
                job_id=int(entry["job_id"]) if entry["job_id"] is not None else None,
                spec=entry["rand_id"],
                repo=entry["repo_name"],
                path=entry["path"],
                at=parse_time(entry["created_at"]),
                logs=logs[int(job)] if job is not None else None,
            )
        return out

    async def _entries(self, user: str, keys: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        found: dict[str, Mapping[str, Any]] = {}
        for start in range(0, len(keys), _CHUNK):
            names = {f"k{i}": k for i, k in enumerate(keys[start : start + _CHUNK])}
            rows = await self.db.fetch(
                _PRODUCERS.format(keys=", ".join(f":{n}" for n in names)), {"user": user, **names}
            )
            found.update({r["key"]: r for r in rows})
        return found
