"""BatchService: what the API and CLI do with batch specs and batch changes."""

from __future__ import annotations

import posixpath
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from offload.batches import changesets as cs
from offload.batches.execution import secret_names
from offload.batches.provenance import Provenance, log_json
from offload.batches.queue import SPEC as EXECUTION
from offload.batches.queue import BatchQueue
from offload.batches.results import loaded_diff
from offload.batches.spec.model import BatchSpec
from offload.batches.spec.recall import remember
from offload.batches.spec.submission import Submission, read_submission
from offload.batches.spec.workers import SpecWorkers, shared
from offload.batches.store import BatchSpecRow, BatchStore, ChangesetSpecRow
from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.queue.record import LogEntry, Record
from offload.queue.store import SqlQueueStore
from offload.secrets.store import Secrets


class BatchNotFound(LookupError):
    """No batch spec or batch change by that name or id."""


class MountError(ValueError):
    """A step mounts a path that is not a file or directory uploaded with the spec."""


def mount_path(path: str, where: str = "mount.path") -> str:
    """A mount's path as uploaded: relative to the spec's directory, normalized."""
    clean = posixpath.normpath(path)
    if path.startswith("/") or clean == ".." or clean.startswith("../"):
        raise MountError(
            f"{where}: {path} must be a path inside the batch spec's directory, like ./fix.sh"
        )
    return clean


class BatchStateError(ValueError):
    """The request does not fit the state things are in (e.g. apply before execution ended)."""


_WORKSPACE_STATES = """
SELECT w.id, w.repo_name, w.path, w.branch, w.ignored, w.skipped, w.cached_result_found,
       w.cached_steps, j.id AS job_id, j.state, j.failure_message, j.started_at, j.finished_at
FROM batch_workspaces w
LEFT JOIN batch_workspace_jobs j ON j.workspace_id = w.id
WHERE w.batch_spec_id = :spec
ORDER BY w.id
"""


# The same words as workspace_state(), counted in the database: progress is polled while
# tens of thousands of workspaces run, and must not read (or join) them all each time. A
# workspace has at most one job (retry queues the same job again), so the workspaces with
# none of the flags are those of the jobs, and those not yet queued.
# Grouped by the flags themselves, so the flags index answers it alone (no sort).
_FLAG_COUNTS = """
SELECT ignored, skipped, cached_result_found, COUNT(*) AS n
FROM batch_workspaces
WHERE batch_spec_id = :spec
GROUP BY ignored, skipped, cached_result_found
"""
_JOB_COUNTS = """
SELECT state, COUNT(*) AS n FROM batch_workspace_jobs WHERE batch_spec_id = :spec GROUP BY state
"""
_IGNORED_REPOS = """
SELECT DISTINCT repo_name FROM batch_workspaces
WHERE batch_spec_id = :spec AND ignored = :yes ORDER BY repo_name
"""


def _flag(row: Mapping[str, Any]) -> str:
    """A workspace's flag: ignored, skipped, cached, or "" for one that runs as a job."""
    if row["ignored"]:
        return "ignored"
    if row["skipped"]:
        return "skipped"
    return "cached" if row["cached_result_found"] else ""


def _changeset_json(spec: ChangesetSpecRow) -> dict[str, Any]:
    """A changeset spec in full: a diff that is not UTF-8 also comes as its exact bytes."""
    diff = loaded_diff(spec.diff)
    exact = spec.diff if not spec.diff.startswith("base64:") else None
    return {
        "specId": spec.id,
        "repo": spec.repo_name,
        "kind": spec.kind,
        "externalId": spec.external_id,
        "baseRef": spec.base_ref,
        "baseRev": spec.base_rev,
        "branch": spec.head_ref,
        "title": spec.title,
        "body": spec.body,
        "commitMessage": spec.commit_message,
        "author": {"name": spec.author_name, "email": spec.author_email},
        "published": spec.published,
        "diff": exact if exact is not None else diff.decode("utf-8", errors="replace"),
        "diffBase64": None if exact is not None else spec.diff[len("base64:") :],
        "added": spec.diff_added,
        "deleted": spec.diff_deleted,
    }


def workspace_state(row: dict[str, Any]) -> str:
    """One word for a workspace: ignored, skipped, cached, or its job's state."""
    return _flag(row) or str(row["state"] or "pending")


class BatchService:
    """Submitting, previewing, applying, retrying and closing batch changes."""

    def __init__(
        self,
        db: Database,
        clock: Clock | None = None,
        *,
        secrets: Secrets | None = None,
        workers: SpecWorkers | None = None,
    ) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        # Specs are parsed in these worker processes, never on the event loop.
        self.workers = workers or shared()
        # When given, a spec whose steps name a secret its namespace cannot read is refused
        # at once, rather than failing at resolution.
        self.secrets = secrets
        self.store = BatchStore(db, self.clock)
        self.executions = SqlQueueStore(db, EXECUTION, clock=self.clock)
        self.queue = BatchQueue(db, self.executions)
        self.reconciler = SqlQueueStore(db, cs.SPEC, clock=self.clock)
        self.provenance = Provenance(db, self.store, self.executions, secrets)

    # -- specs ------------------------------------------------------------------------------

    async def read_submission(self, body: Callable[[], Awaitable[bytes]]) -> Submission:
        """A submission's request body, read once a spec worker can take it, parsed there.

        WorkersBusy when too many are read already; SubmissionError for a body that is not
        one; SpecLimitExceeded for a spec too large.
        """
        with self.workers.admitted():
            raw = await body()
            submission = await self.workers.run(read_submission, raw)
        if submission.spec is not None:
            remember(submission.text, submission.spec)
        return submission

    async def submit(
        self,
        user: str,
        raw: str,
        source: str = "<spec>",
        files: Mapping[str, bytes] | None = None,
        *,
        runs_locally: bool = False,
        created_by: str = "",
        parsed: BatchSpec | None = None,
    ) -> BatchSpecRow:
        """Validate and store a spec of namespace `user` (with the files its steps mount) and
        queue its resolution.

        `runs_locally`: the user's CLI claims the workspaces (`claim`), not the executors.
        `parsed`: the spec as read_submission() parsed it already.
        SpecErrors if the spec is invalid; MountError if a mounted path was not uploaded.
        """
        spec = parsed or await self.workers.parse(raw, source)
        if self.secrets is not None:
            await self.secrets.require(user, secret_names(spec.steps))
        files = dict(files or {})
        for name in files:
            if mount_path(name, f"files[{name!r}]") != name:
                raise MountError(f"files[{name!r}]: give uploaded paths in normal form")
        for i, step in enumerate(spec.steps):
            for j, mount in enumerate(step.mount):
                where = f"steps[{i}].mount[{j}].path"
                path = mount_path(mount.path, where)
                if not any(f == path or f.startswith(path + "/") for f in files):
                    raise MountError(
                        f"{where}: {mount.path} was not uploaded with the spec; submit it with "
                        "`offload batch preview -f SPEC`, which uploads what the steps mount"
                    )
        return await self.store.create_spec(
            user, spec.name, raw, files, runs_locally=runs_locally, created_by=created_by
        )

    async def spec_row(self, rand_id: str) -> BatchSpecRow:
        """A spec by the id users see; BatchNotFound otherwise."""
        row = await self.store.spec_by_rand_id(rand_id)
        if row is None:
            raise BatchNotFound(f"no batch spec {rand_id}")
        return row

    async def claim(self, rand_id: str, holder: str) -> Record | None:
        """The job of the next workspace of a spec that runs locally, held by `holder`."""
        row = await self.spec_row(rand_id)
        if not row.runs_locally:
            raise BatchStateError(
                f"batch spec {rand_id} runs on the executors; only a spec submitted with "
                "`offload batch preview --local` hands its workspaces to the user's machine"
            )
        return await self.queue.claim(row.id, row.user_name, holder)

    async def job_ids_of_spec(self, spec_id: int, ids: Sequence[int]) -> list[int]:
        """Those of `ids` that are workspace jobs of spec `spec_id`."""
        if not ids:
            return []
        marks = {f"i{n}": int(i) for n, i in enumerate(ids[:1000])}
        rows = await self.db.fetch(
            "SELECT id FROM batch_workspace_jobs WHERE batch_spec_id = :spec AND id IN ("
            + ", ".join(":" + k for k in marks)
            + ")",
            {"spec": spec_id, **marks},
        )
        return [int(r["id"]) for r in rows]

    async def workspaces(self, spec_id: int, state: str | None = None) -> list[dict[str, Any]]:
        """Every workspace of a spec with its state (only those in `state`, if given)."""
        rows = await self.db.fetch(_WORKSPACE_STATES, {"spec": spec_id})
        every = ({**r, "state": workspace_state(r)} for r in rows)
        return [w for w in every if state is None or w["state"] == state]

    async def progress(self, rand_id: str) -> dict[str, Any]:
        """Where a spec is: resolution, then workspace states; `done` once nothing will run."""
        row = await self.spec_row(rand_id)
        resolution, failure = await self.store.resolution(row.id)
        spec = {"spec": row.id}
        flags: dict[str, int] = {}
        for r in await self.db.fetch(_FLAG_COUNTS, spec):
            flag = _flag(r)  # "" counts the workspaces that their jobs' states count
            flags[flag] = flags.get(flag, 0) + int(r["n"])
        jobs = {str(r["state"]): int(r["n"]) for r in await self.db.fetch(_JOB_COUNTS, spec)}
        counts = {state: n for state, n in flags.items() if state} | jobs
        if (waiting := flags.get("", 0) - sum(jobs.values())) > 0:
            counts["pending"] = waiting
        running = sum(counts.get(s, 0) for s in ("pending", "queued", "processing", "errored"))
        ignored = [
            r["repo_name"] for r in await self.db.fetch(_IGNORED_REPOS, {**spec, "yes": True})
        ]
        resolved = resolution == "completed"
        return {
            "id": row.rand_id,
            "name": row.name,
            "user": row.user_name,
            "resolution": resolution,
            "resolutionError": failure,
            "workspaces": sum(flags.values()),
            "states": counts,
            "ignored": ignored,
            "done": (resolved and running == 0) or resolution == "failed",
            "applied": row.applied_at is not None,
        }

    # -- preview and apply ------------------------------------------------------------------

    async def recent(self, namespaces: Sequence[str], *, limit: int = 20) -> list[dict[str, Any]]:
        """The batch changes of `namespaces`, the most recently updated first."""
        marks = {f"n{i}": n for i, n in enumerate(namespaces)}
        if not marks:
            return []
        return await self.db.fetch(
            "SELECT id, user_name, name, description, created_at, updated_at, closed_at"
            f" FROM batch_changes WHERE user_name IN ({', '.join(':' + k for k in marks)})"
            " ORDER BY updated_at DESC, id DESC LIMIT :limit",
            {**marks, "limit": limit},
        )

    async def find_change(self, user: str, name: str) -> dict[str, Any] | None:
        """A batch change's row by owner and name, or None."""
        rows = await self.db.fetch(
            "SELECT * FROM batch_changes WHERE user_name = :u AND name = :n", {"u": user, "n": name}
        )
        return rows[0] if rows else None

    async def _changesets(self, batch_change_id: int) -> list[cs.ChangesetRow]:
        rows = await self.db.fetch(
            "SELECT * FROM changesets WHERE batch_change_id = :b ORDER BY id",
            {"b": batch_change_id},
        )
        return [cs.ChangesetRow.from_row(r) for r in rows]

    async def changeset_specs_by_id(self, ids: Sequence[int]) -> dict[int, ChangesetSpecRow]:
        """Changeset specs by id (those that exist)."""
        out: dict[int, ChangesetSpecRow] = {}
        for start in range(0, len(ids), 400):
            chunk = {f"i{n}": i for n, i in enumerate(ids[start : start + 400])}
            rows = await self.db.fetch(
                "SELECT * FROM changeset_specs WHERE id IN ("
                + ", ".join(f":{k}" for k in chunk)
                + ")",
                chunk,
            )
            out.update({int(r["id"]): ChangesetSpecRow.from_row(r) for r in rows})
        return out

    async def plan(self, row: BatchSpecRow) -> cs.Plan:
        """What applying `row` would do to its batch change."""
        specs = await self.store.changeset_specs(row.id)
        change = await self.find_change(row.user_name, row.name)
        existing = await self._changesets(int(change["id"])) if change else []
        current = await self.changeset_specs_by_id(
            [c.spec_id for c in existing if c.spec_id is not None]
        )
        return cs.plan(specs, existing, current)

    async def preview(self, rand_id: str) -> dict[str, Any]:
        """The progress of a spec and, once it is done, the operations apply would run."""
        progress = await self.progress(rand_id)
        if not progress["done"]:
            return {**progress, "operations": None}
        plan = await self.plan(await self.spec_row(rand_id))
        return {
            **progress,
            "operations": [op.to_json() for op in plan.operations],
            "counts": plan.counts(),
        }

    async def changesets(self, rand_id: str, *, after: int, limit: int) -> list[dict[str, Any]]:
        """A spec's changeset specs in full (rendered title, body, commit message, diff), by
        id after `after`: the preview leaves these out, as a spec may have tens of thousands."""
        row = await self.spec_row(rand_id)
        rows = await self.db.fetch(
            "SELECT * FROM changeset_specs WHERE batch_spec_id = :s AND id > :after "
            "ORDER BY id LIMIT :limit",
            {"s": row.id, "after": after, "limit": limit},
        )
        return [_changeset_json(ChangesetSpecRow.from_row(r)) for r in rows]

    async def apply(self, rand_id: str) -> dict[str, Any]:
        """Make a spec its batch change's current one and queue every changeset that changes."""
        row = await self.spec_row(rand_id)
        progress = await self.progress(rand_id)
        if not progress["done"]:
            raise BatchStateError(
                f"batch spec {rand_id} is still executing; wait for `offload batch preview` "
                "to show its operations"
            )
        if progress["resolution"] == "failed":
            raise BatchStateError(f"batch spec {rand_id} failed: {progress['resolutionError']}")
        plan = await self.plan(row)
        spec = await self.workers.parse(row.raw_spec, row.name)
        now = self.clock.now()
        async with self.db.transaction() as tx:
            found = await tx.fetch(
                "SELECT id FROM batch_changes WHERE user_name = :u AND name = :n",
                {"u": row.user_name, "n": row.name},
            )
            if found:
                change_id = int(found[0]["id"])
                await tx.fetch(
                    "UPDATE batch_changes SET batch_spec_id = :s, description = :d, "
                    "updated_at = :now, closed_at = NULL WHERE id = :id",
                    {"s": row.id, "d": spec.description, "now": now, "id": change_id},
                )
            else:
                created = await tx.fetch(
                    "INSERT INTO batch_changes (user_name, name, description, batch_spec_id, "
                    "created_at, updated_at) VALUES (:u, :n, :d, :s, :now, :now) RETURNING id",
                    {
                        "u": row.user_name,
                        "n": row.name,
                        "d": spec.description,
                        "s": row.id,
                        "now": now,
                    },
                )
                change_id = int(created[0]["id"])
            for op in plan.operations:
                if op.changeset_id is None:
                    await tx.fetch(
                        "INSERT INTO changesets (state, queued_at, batch_change_id, repo_name, "
                        "spec_id, owned, updated_at, created_at) VALUES ('queued', :now, :b, "
                        ":repo, :spec, :owned, :now, :now)",
                        {
                            "now": now,
                            "b": change_id,
                            "repo": op.repo_name,
                            "spec": op.spec_id,
                            "owned": "import" not in op.actions,
                        },
                    )
                elif "detach" in op.actions:
                    await tx.fetch(
                        "UPDATE changesets SET detached = true, closing = :closing, "
                        "previous_spec_id = spec_id, spec_id = NULL, updated_at = :now, "
                        "state = CASE WHEN :closing THEN 'queued' ELSE state END, "
                        "queued_at = :now WHERE id = :id",
                        {"closing": "close" in op.actions, "now": now, "id": op.changeset_id},
                    )
                else:
                    await tx.fetch(
                        "UPDATE changesets SET previous_spec_id = spec_id, spec_id = :spec, "
                        "state = 'queued', queued_at = :now, num_failures = 0, "
                        "failure_message = NULL, updated_at = :now WHERE id = :id",
                        {"spec": op.spec_id, "now": now, "id": op.changeset_id},
                    )
            await tx.fetch(
                "UPDATE batch_specs SET applied_at = :now, batch_change_id = :b WHERE id = :s",
                {"now": now, "b": change_id, "s": row.id},
            )
        await self.db.notify(cs.SPEC.name)
        return {"batchChange": row.name, "id": change_id, "counts": plan.counts()}

    # -- batch changes ----------------------------------------------------------------------

    async def change(self, user: str, name: str) -> dict[str, Any]:
        """A batch change by owner and name; BatchNotFound otherwise."""
        change = await self.find_change(user, name)
        if change is None:
            raise BatchNotFound(
                f"{user} has no batch change named {name!r}; `offload batch apply` creates it"
            )
        return change

    async def status(self, user: str, name: str) -> dict[str, Any]:
        """The burndown of a batch change and the workspace states of its current spec."""
        change = await self.change(user, name)
        changesets = await self._changesets(int(change["id"]))
        specs = await self.changeset_specs_by_id(
            [c.spec_id for c in changesets if c.spec_id is not None]
        )
        burndown: dict[str, int] = {}
        for c in changesets:
            burndown[c.status] = burndown.get(c.status, 0) + 1
        row = await self.store.spec(int(change["batch_spec_id"]))
        assert row is not None
        progress = await self.progress(row.rand_id)
        return {
            "name": name,
            "user": user,
            "spec": row.rand_id,
            "closed": change["closed_at"] is not None,
            "changesets": burndown,
            "workspaces": progress["states"],
            "list": [
                {
                    "id": c.id,
                    "repo": c.repo_name,
                    "branch": c.head_ref
                    or (specs[c.spec_id].head_ref if c.spec_id in specs else ""),
                    "status": c.status,
                    "externalId": c.external_id,
                    "url": c.external_url,
                    "review": c.review_state,
                    "checks": c.checks_state,
                    "error": c.failure_message,
                }
                for c in changesets
            ],
        }

    async def _spec_for(self, user: str, name: str, rand_id: str | None) -> BatchSpecRow:
        if rand_id:
            given = await self.spec_row(rand_id)
            # A spec of another namespace is not found through this one's batch change.
            if given.user_name != user:
                raise BatchNotFound(f"{user} has no batch spec {rand_id}")
            return given
        change = await self.find_change(user, name)
        if change is not None:
            row = await self.store.spec(int(change["batch_spec_id"]))
            assert row is not None
            return row
        # Not applied yet: the newest spec of that name, as being previewed.
        rows = await self.db.fetch(
            "SELECT * FROM batch_specs WHERE user_name = :u AND name = :n ORDER BY id DESC LIMIT 1",
            {"u": user, "n": name},
        )
        if not rows:
            raise BatchNotFound(f"{user} has no batch spec or batch change named {name!r}")
        return BatchSpecRow.from_row(rows[0])

    async def logs(
        self, user: str, name: str, *, spec: str | None = None, repo: str | None = None
    ) -> list[dict[str, Any]]:
        """The execution logs of a spec's workspaces (those of `repo` only, if given)."""
        row = await self._spec_for(user, name, spec)
        chosen = [w for w in await self.workspaces(row.id) if not repo or w["repo_name"] == repo]
        # Those the step cache answered (in part) show the run that produced their results.
        cached = {int(w["id"]) for w in chosen if w["cached_steps"]}
        producers = (
            await self.provenance.producers(
                row, [w for w in await self.store.workspaces(row.id) if w.id in cached]
            )
            if cached
            else {}
        )
        out = []
        for w in chosen:
            entries: list[LogEntry] = (
                await self.executions.logs(int(w["job_id"])) if w["job_id"] else []
            )
            producer = producers.get(int(w["id"]))
            out.append(
                {
                    "repo": w["repo_name"],
                    "path": w["path"],
                    "state": w["state"],
                    "error": w["failure_message"],
                    "logs": [log_json(e) for e in entries],
                    "cachedFrom": producer.to_json() if producer is not None else None,
                }
            )
        return out

    async def retry(
        self, user: str, name: str, *, spec: str | None = None, repo: str | None = None
    ) -> int:
        """Queue the failed workspaces of a spec again (of `repo` only, if given); how many."""
        row = await self._spec_for(user, name, spec)
        if row.runs_locally:
            raise BatchStateError(
                f"batch spec {row.rand_id} ran on your machine: run `offload batch preview -f "
                "SPEC --local` again; the step cache answers every workspace that finished"
            )
        again = 0
        for w in await self.workspaces(row.id):
            if w["state"] not in ("failed", "errored", "canceled") or not w["job_id"]:
                continue
            if repo and w["repo_name"] != repo:
                continue
            if await self.executions.requeue(int(w["job_id"])):
                again += 1
        if again:
            await self.db.notify(EXECUTION.name)
        return again

    async def close(self, user: str, name: str) -> int:
        """Close a batch change: its open pull requests are closed; how many will be."""
        change = await self.change(user, name)
        now = self.clock.now()
        rows = await self.db.fetch(
            "UPDATE changesets SET closing = true, state = 'queued', queued_at = :now, "
            "updated_at = :now WHERE batch_change_id = :b AND owned AND NOT detached "
            "AND (external_state IN ('open', 'draft') OR external_state IS NULL) RETURNING id",
            {"now": now, "b": change["id"]},
        )
        await self.db.fetch(
            "UPDATE batch_changes SET closed_at = :now WHERE id = :b",
            {"now": now, "b": change["id"]},
        )
        await self.db.notify(cs.SPEC.name)
        return len(rows)
