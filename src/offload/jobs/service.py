"""Generic jobs: create one from a command line, follow it, cancel or retry it."""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from offload.db.base import Database
from offload.dispatch.grants import QueueGrants
from offload.jobs import queue
from offload.jobs.submissions import SubmissionKeys
from offload.queue.record import LogEntry, Record
from offload.queue.states import State
from offload.queue.store import SqlQueueStore
from offload.secrets.store import Secrets, check_name

# Resolves a repository name and a revision to a commit, or raises LookupError saying why.
Resolver = Callable[[str, str], Awaitable[str]]
WORKDIR = "repository"
STEP_KEY = "run"


class JobRequestError(ValueError):
    """A job request that cannot run; the message says what to change."""


@dataclass(frozen=True)
class JobRequest:
    """What `offload run` asks for."""

    repo: str
    command: list[str]
    rev: str = "HEAD"
    image: str = ""
    env: Sequence[str] = ()
    secrets: Sequence[str] = ()
    allow_network: bool = False
    # Empty: the first of the configured queues.
    queue: str = ""
    # Whose job it is (the submitter's own name, or an organization's), and who submitted it:
    # both come from the caller's principal, never from the request body alone.
    namespace: str = ""
    submitted_by: str = ""

    def digest(self) -> str:
        """sha256 of everything the request asks for: equal for a retry of it, only."""
        text = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class JobView:
    """A job as users see it."""

    id: int
    queue: str
    namespace: str
    submitted_by: str
    state: State
    repo: str
    commit: str
    command: str
    failure_message: str | None
    exit_code: int | None
    record: Record

    def to_json(self) -> dict[str, Any]:
        """The API's JSON form."""
        record = self.record
        return {
            "id": self.id,
            "queue": self.queue,
            "namespace": self.namespace,
            "submittedBy": self.submitted_by,
            "state": self.state.value,
            "repository": self.repo,
            "commit": self.commit,
            "command": self.command,
            "failureMessage": self.failure_message,
            "exitCode": self.exit_code,
            "queuedAt": record.queued_at.isoformat(),
            "startedAt": record.started_at.isoformat() if record.started_at else None,
            "finishedAt": record.finished_at.isoformat() if record.finished_at else None,
            "executor": record.worker_hostname,
            "numResets": record.num_resets,
            "numFailures": record.num_failures,
        }


def exit_code_of(logs: Sequence[LogEntry]) -> int | None:
    """The exit code of the job's step: the last step entry that finished."""
    steps = [e for e in logs if e.key.startswith("step.") and e.exit_code is not None]
    return steps[-1].exit_code if steps else None


class JobService:
    """Generic jobs on top of the record queue: one queue per configured name."""

    def __init__(
        self,
        db: Database,
        resolve: Resolver,
        queues: Sequence[str] = (queue.DEFAULT,),
        *,
        secrets: Secrets,
        grants: QueueGrants,
        keys: SubmissionKeys | None = None,
    ) -> None:
        self.db = db
        self.stores = {name: SqlQueueStore(db, queue.spec(name)) for name in queues}
        self.default_queue = next(iter(self.stores))
        self.resolve = resolve
        self.secrets = secrets
        self.grants = grants
        self.keys = keys or SubmissionKeys(db)

    async def create_once(self, request: JobRequest, key: str) -> tuple[int, bool]:
        """Like `create`, once per submitter and idempotency key: the job id, and whether this
        call made it (False: a retry, answered with the job the first call made). KeyReused
        when the key came with another request, KeyInFlight while its first call runs."""
        made = await self.keys.claim(request.submitted_by, key, request.digest())
        if made is not None:
            return made, False
        try:
            job_id = await self.create(request)
        except Exception:
            await self.keys.drop(request.submitted_by, key)
            raise
        await self.keys.settle(request.submitted_by, key, job_id)
        return job_id, True

    async def create(self, request: JobRequest) -> int:
        """Enqueue a job; JobRequestError when it cannot run as asked, NotGranted when its
        namespace may not use the queue (or its network), UnknownSecret for a missing secret."""
        if not request.command:
            raise JobRequestError(
                "no command given; put it after --, e.g. offload run --repo r -- make test"
            )
        if not request.namespace:
            raise JobRequestError("a job needs a namespace")
        name = request.queue or self.default_queue
        store = self.stores.get(name)
        if store is None:
            raise JobRequestError(
                f"no job queue {name!r}; the queues are {', '.join(self.stores)} "
                "(OFFLOAD_JOB_QUEUES on the server)"
            )
        await self.grants.require(name, request.namespace, network=request.allow_network)
        for pair in request.env:
            if "=" not in pair or not pair.split("=", 1)[0]:
                raise JobRequestError(f"--env {pair!r} must be NAME=value")
        names = [check_name(n) for n in request.secrets]
        # UnknownSecret now rather than at dequeue.
        await self.secrets.require(request.namespace, names)
        try:
            commit = await self.resolve(request.repo, request.rev)
        except LookupError as exc:
            raise JobRequestError(str(exc)) from exc
        payload = {
            "repositoryName": request.repo,
            "repositoryDirectory": WORKDIR,
            "commit": commit,
            "shallowClone": True,
            "dockerSteps": [
                {
                    "key": STEP_KEY,
                    "image": request.image,
                    "commands": [shlex.join(request.command)],
                    "dir": WORKDIR,
                    "env": list(request.env),
                }
            ],
            "secrets": names,
            "allowNetwork": request.allow_network,
        }
        return await store.enqueue(
            {
                "payload": payload,
                "namespace": request.namespace,
                "submitted_by": request.submitted_by,
            }
        )

    async def _store_of(self, job_id: int) -> SqlQueueStore | None:
        """The store of the queue the job is in (None: no such job, or a queue since removed)."""
        rows = await self.db.fetch("SELECT queue FROM jobs WHERE id = :id", {"id": job_id})
        return self.stores.get(rows[0]["queue"]) if rows else None

    async def view(self, job_id: int) -> JobView | None:
        """One job, or None."""
        store = await self._store_of(job_id)
        record = await store.get(job_id) if store is not None else None
        if store is None or record is None:
            return None
        return self._view(record, await store.logs(job_id))

    def _view(self, record: Record, logs: Sequence[LogEntry]) -> JobView:
        payload = record.fields["payload"]
        steps = payload.get("dockerSteps") or [{}]
        return JobView(
            id=record.id,
            queue=record.queue,
            namespace=str(record.fields.get("namespace") or ""),
            submitted_by=str(record.fields.get("submitted_by") or ""),
            state=record.state,
            repo=payload.get("repositoryName", ""),
            commit=payload.get("commit", ""),
            command=" && ".join(steps[0].get("commands", [])),
            failure_message=record.failure_message,
            exit_code=exit_code_of(logs),
            record=record,
        )

    async def newest(
        self,
        namespaces: Sequence[str] | None,
        *,
        limit: int = 50,
        before: int | None = None,
        state: State | None = None,
        queue: str | None = None,
        repo: str | None = None,
    ) -> list[JobView]:
        """The newest jobs first, of `namespaces` (None: every job), before id `before`, in
        `state`, `queue` and on repository `repo` when given."""
        where = ["1 = 1"]
        params: dict[str, Any] = {"limit": limit}
        if repo is not None:
            name = (
                "payload->>'repositoryName'"
                if self.db.dialect == "postgresql"
                else "json_extract(payload, '$.repositoryName')"
            )
            where.append(f"{name} = :repo")
            params["repo"] = repo
        if state is not None:
            where.append("state = :state")
            params["state"] = state.value
        if queue is not None:
            where.append("queue = :queue")
            params["queue"] = queue
        if namespaces is not None:
            marks = {f"n{i}": n for i, n in enumerate(namespaces)}
            where.append(f"namespace IN ({', '.join(':' + k for k in marks) or 'NULL'})")
            params.update(marks)
        if before is not None:
            where.append("id < :before")
            params["before"] = before
        rows = await self.db.fetch(
            f"SELECT id FROM jobs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT :limit",
            params,
        )
        views = [await self.view(int(r["id"])) for r in rows]
        return [v for v in views if v is not None]

    async def logs(self, job_id: int) -> list[LogEntry]:
        """The job's log entries, oldest first."""
        store = await self._store_of(job_id)
        return await store.logs(job_id) if store is not None else []

    async def cancel(self, job_id: int) -> State | None:
        """Cancel the job (at once if waiting; its executor stops it if running)."""
        store = await self._store_of(job_id)
        return await store.cancel(job_id) if store is not None else None

    async def retry(self, job_id: int) -> bool:
        """Run a finished job again."""
        store = await self._store_of(job_id)
        return await store.requeue(job_id) if store is not None else False
