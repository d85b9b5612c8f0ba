"""Rows of batch changes and the SQL that reads and writes them (both dialects)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from offload.batches.spec.model import BatchSpec
from offload.batches.spec.workers import shared
from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.db.values import decode_json, parse_time

# The record queue (and wake-up channel) of spec resolutions.
RESOLUTIONS = "batch_resolutions"


@dataclass(frozen=True)
class BatchSpecRow:
    """A submitted batch spec."""

    id: int
    rand_id: str
    user_name: str
    name: str
    raw_spec: str
    created_at: datetime
    applied_at: datetime | None
    batch_change_id: int | None
    # `offload batch preview --local`: the user's CLI claims and runs its workspaces.
    runs_locally: bool = False
    # The user who submitted it (user_name is its namespace, which may be an organization).
    created_by: str = ""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BatchSpecRow:
        """Build from a batch_specs row."""
        created = parse_time(row["created_at"])
        assert created is not None
        return cls(
            id=int(row["id"]),
            rand_id=row["rand_id"],
            user_name=row["user_name"],
            name=row["name"],
            raw_spec=row["raw_spec"],
            created_at=created,
            applied_at=parse_time(row["applied_at"]),
            batch_change_id=row["batch_change_id"],
            runs_locally=bool(row["runs_locally"]),
            created_by=str(row.get("created_by") or ""),
        )

    async def parsed(self) -> BatchSpec:
        """The spec itself, parsed once per process and spec (thousands of jobs share one),
        in a spec worker: a stored spec is the user's text, never parsed on the event loop."""
        known = _PARSED.get(self.id)
        if known is None:
            known = await shared().parse(self.raw_spec, self.name)
            _PARSED[self.id] = known
            while len(_PARSED) > _PARSED_AT_MOST:
                del _PARSED[next(iter(_PARSED))]
        return known


# Parsed specs by id, oldest first: the jobs of a few specs at a time are being dequeued.
_PARSED: dict[int, BatchSpec] = {}
_PARSED_AT_MOST = 64


@dataclass(frozen=True)
class WorkspaceRow:
    """One repository (branch, directory) of a batch spec."""

    id: int
    batch_spec_id: int
    repo_name: str
    branch: str
    commit: str
    path: str
    file_matches: tuple[str, ...]
    only_fetch_workspace: bool
    ignored: bool
    skipped: bool
    cached_steps: int
    cached_result_found: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> WorkspaceRow:
        """Build from a batch_workspaces row."""
        return cls(
            id=int(row["id"]),
            batch_spec_id=int(row["batch_spec_id"]),
            repo_name=row["repo_name"],
            branch=row["branch"],
            commit=row["base_rev"],
            path=row["path"] or "",
            file_matches=tuple(decode_json(row["file_matches"]) or ()),
            only_fetch_workspace=bool(row["only_fetch_workspace"]),
            ignored=bool(row["ignored"]),
            skipped=bool(row["skipped"]),
            cached_steps=int(row["cached_steps"]),
            cached_result_found=bool(row["cached_result_found"]),
        )


@dataclass(frozen=True)
class NewWorkspace:
    """A workspace the resolver found, before it is stored."""

    repo_name: str
    branch: str
    commit: str
    path: str = ""
    file_matches: tuple[str, ...] = ()
    only_fetch_workspace: bool = False
    ignored: bool = False
    skipped: bool = False


@dataclass(frozen=True)
class ChangesetSpecRow:
    """What one workspace's changes become on the code host, or a pull request to import."""

    id: int
    batch_spec_id: int
    workspace_id: int | None
    repo_name: str
    kind: str
    external_id: str | None
    base_ref: str
    base_rev: str
    head_ref: str
    title: str
    body: str
    commit_message: str
    author_name: str
    author_email: str
    published: bool | str | None
    diff: str
    diff_added: int
    diff_deleted: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ChangesetSpecRow:
        """Build from a changeset_specs row."""
        published = decode_json(row["published"])
        return cls(
            id=int(row["id"]),
            batch_spec_id=int(row["batch_spec_id"]),
            workspace_id=row["workspace_id"],
            repo_name=row["repo_name"],
            kind=row["kind"],
            external_id=row["external_id"],
            base_ref=row["base_ref"],
            base_rev=row["base_rev"],
            head_ref=row["head_ref"],
            title=row["title"],
            body=row["body"],
            commit_message=row["commit_message"],
            author_name=row["author_name"],
            author_email=row["author_email"],
            published=(published or {}).get("published"),
            diff=row["diff"],
            diff_added=int(row["diff_added"]),
            diff_deleted=int(row["diff_deleted"]),
        )


_WORKSPACE_COLUMNS = (
    "batch_spec_id, repo_name, branch, base_rev, path, file_matches, only_fetch_workspace, "
    "ignored, skipped, cached_steps, cached_result_found"
)

# Changeset specs copied from an earlier spec's workspace with the same result and branch.
_COPY_SPECS = """
INSERT INTO changeset_specs (batch_spec_id, workspace_id, repo_name, kind, external_id,
    base_ref, base_rev, head_ref, title, body, commit_message, author_name, author_email,
    published, diff, diff_added, diff_deleted, created_at)
SELECT :target, nw.id, cs.repo_name, cs.kind, cs.external_id, cs.base_ref, cs.base_rev,
    cs.head_ref, cs.title, cs.body, cs.commit_message, cs.author_name, cs.author_email,
    cs.published, cs.diff, cs.diff_added, cs.diff_deleted, :now
FROM batch_workspaces nw
JOIN batch_workspaces ow ON ow.batch_spec_id = :source AND ow.result_key = nw.result_key
    AND ow.branch = nw.branch
JOIN changeset_specs cs ON cs.workspace_id = ow.id
WHERE nw.id IN ({ids}) AND nw.batch_spec_id = :target
"""
_COPY_CHUNK = 500

_SPEC_COLUMNS = (
    "batch_spec_id, workspace_id, repo_name, kind, external_id, base_ref, base_rev, head_ref, "
    "title, body, commit_message, author_name, author_email, published, diff, diff_added, "
    "diff_deleted, created_at"
)
# Workspaces per INSERT statement (8 parameters each; SQLite allows 32,766 per statement).
_ROWS_PER_INSERT = 500
_INSERT_SPEC = (
    f"INSERT INTO changeset_specs ({_SPEC_COLUMNS}) VALUES ("
    + ", ".join(f":{c.strip()}" for c in _SPEC_COLUMNS.split(","))
    + ")"
)


class BatchStore:
    """Batch specs, their workspaces, the step cache and changeset specs."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    # -- specs ------------------------------------------------------------------------------

    async def create_spec(
        self,
        user: str,
        name: str,
        raw: str,
        files: Mapping[str, bytes] | None = None,
        *,
        runs_locally: bool = False,
        created_by: str = "",
    ) -> BatchSpecRow:
        """Store a validated spec, its mounted files, and queue its resolution: all or nothing."""
        now = self.clock.now()
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                "INSERT INTO batch_specs (rand_id, user_name, name, raw_spec, created_at,"
                " runs_locally, created_by) VALUES (:rand_id, :user, :name, :raw, :now, :local,"
                " :by) RETURNING *",
                {
                    "rand_id": secrets.token_hex(8),
                    "by": created_by,
                    "user": user,
                    "name": name,
                    "raw": raw,
                    "now": now,
                    "local": runs_locally,
                },
            )
            spec = BatchSpecRow.from_row(rows[0])
            for path, content in sorted((files or {}).items()):
                await tx.fetch(
                    "INSERT INTO batch_spec_files (batch_spec_id, path, content, sha256) "
                    "VALUES (:spec, :path, :content, :sha)",
                    {
                        "spec": spec.id,
                        "path": path,
                        "content": content,
                        "sha": hashlib.sha256(content).hexdigest(),
                    },
                )
            await tx.fetch(
                "INSERT INTO batch_resolution_jobs (state, queued_at, batch_spec_id) "
                "VALUES ('queued', :now, :spec)",
                {"now": now, "spec": spec.id},
            )
        await self.db.notify(RESOLUTIONS)
        return spec

    async def files(self, spec_id: int) -> dict[str, bytes]:
        """The files a spec's steps mount, by path."""
        rows = await self.db.fetch(
            "SELECT path, content FROM batch_spec_files WHERE batch_spec_id = :s", {"s": spec_id}
        )
        return {r["path"]: bytes(r["content"]) for r in rows}

    async def file_digests(self, spec_id: int) -> dict[str, str]:
        """The sha256 of each mounted file, by path (what step cache keys cover)."""
        rows = await self.db.fetch(
            "SELECT path, sha256 FROM batch_spec_files WHERE batch_spec_id = :s", {"s": spec_id}
        )
        return {r["path"]: r["sha256"] for r in rows}

    async def spec(self, spec_id: int) -> BatchSpecRow | None:
        """A spec by id."""
        rows = await self.db.fetch("SELECT * FROM batch_specs WHERE id = :id", {"id": spec_id})
        return BatchSpecRow.from_row(rows[0]) if rows else None

    async def spec_by_rand_id(self, rand_id: str) -> BatchSpecRow | None:
        """A spec by the id users see."""
        rows = await self.db.fetch("SELECT * FROM batch_specs WHERE rand_id = :r", {"r": rand_id})
        return BatchSpecRow.from_row(rows[0]) if rows else None

    async def resolution(self, spec_id: int) -> tuple[str, str | None]:
        """The state of a spec's resolution job and its failure message."""
        rows = await self.db.fetch(
            "SELECT state, failure_message FROM batch_resolution_jobs WHERE batch_spec_id = :s",
            {"s": spec_id},
        )
        return (rows[0]["state"], rows[0]["failure_message"]) if rows else ("missing", None)

    # -- workspaces -------------------------------------------------------------------------

    async def add_workspaces(
        self, spec_id: int, found: Sequence[NewWorkspace]
    ) -> list[WorkspaceRow]:
        """Store the resolved workspaces of a spec (replacing any from an earlier attempt)."""
        async with self.db.transaction() as tx:
            await tx.fetch("DELETE FROM batch_workspaces WHERE batch_spec_id = :s", {"s": spec_id})
            # Jobs an earlier attempt queued belong to the workspaces just deleted.
            await tx.fetch(
                "DELETE FROM batch_workspace_jobs WHERE batch_spec_id = :s "
                "AND state <> 'processing'",
                {"s": spec_id},
            )
            # Many rows per statement: a spec can have tens of thousands of workspaces.
            for start in range(0, len(found), _ROWS_PER_INSERT):
                chunk = found[start : start + _ROWS_PER_INSERT]
                values = []
                params: dict[str, Any] = {"spec": spec_id}
                for n, w in enumerate(chunk):
                    values.append(
                        f"(:spec, :repo{n}, :branch{n}, :commit{n}, :path{n}, :matches{n}, "
                        f":only{n}, :ignored{n}, :skipped{n}, 0, false)"
                    )
                    params |= {
                        f"repo{n}": w.repo_name,
                        f"branch{n}": w.branch,
                        f"commit{n}": w.commit,
                        f"path{n}": w.path,
                        f"matches{n}": list(w.file_matches),
                        f"only{n}": w.only_fetch_workspace,
                        f"ignored{n}": w.ignored,
                        f"skipped{n}": w.skipped,
                    }
                await tx.fetch(
                    f"INSERT INTO batch_workspaces ({_WORKSPACE_COLUMNS}) VALUES "
                    + ", ".join(values),
                    params,
                )
            rows = await tx.fetch(
                "SELECT * FROM batch_workspaces WHERE batch_spec_id = :s ORDER BY id",
                {"s": spec_id},
            )
        return [WorkspaceRow.from_row(row) for row in rows]

    async def set_cached(
        self,
        entries: Sequence[tuple[int, int, bool]],
        result_keys: Mapping[int, str] | None = None,
    ) -> None:
        """Record, per (workspace id, steps, complete), how many leading steps the cache
        answers for a workspace, and whether that is all of them; with the key of the result
        its changeset specs come from, when it is."""
        keys = result_keys or {}
        if entries:
            await self.db.executemany(
                "UPDATE batch_workspaces SET cached_steps = :n, cached_result_found = :done, "
                "result_key = :key WHERE id = :id",
                [
                    {"n": steps, "done": done, "id": id_, "key": keys.get(id_)}
                    for id_, steps, done in entries
                ],
            )

    async def earlier_same_spec(self, row: BatchSpecRow) -> int | None:
        """The latest earlier spec of the same namespace, name and text as `row`, if any:
        its workspaces' changeset specs are what `row`'s would render to, result for result."""
        rows = await self.db.fetch(
            "SELECT id FROM batch_specs WHERE user_name = :u AND name = :n AND id < :id "
            "AND raw_spec = :raw ORDER BY id DESC LIMIT 1",
            {"u": row.user_name, "n": row.name, "id": row.id, "raw": row.raw_spec},
        )
        return int(rows[0]["id"]) if rows else None

    async def result_keys(self, spec_id: int) -> set[tuple[str, str]]:
        """(result key, branch) of a spec's workspaces whose changeset specs are made."""
        rows = await self.db.fetch(
            "SELECT result_key, branch FROM batch_workspaces "
            "WHERE batch_spec_id = :s AND result_key IS NOT NULL",
            {"s": spec_id},
        )
        return {(str(r["result_key"]), str(r["branch"])) for r in rows}

    async def copy_changeset_specs(
        self, source: int, target: int, workspaces: Sequence[int]
    ) -> None:
        """Copy to spec `target`'s `workspaces` the changeset specs of spec `source`'s
        workspaces with the same result key and branch, in SQL (no rendering again)."""
        for start in range(0, len(workspaces), _COPY_CHUNK):
            chunk = workspaces[start : start + _COPY_CHUNK]
            names = {f"w{i}": w for i, w in enumerate(chunk)}
            await self.db.fetch(
                _COPY_SPECS.format(ids=", ".join(f":{n}" for n in names)),
                {"source": source, "target": target, "now": self.clock.now(), **names},
            )

    async def workspace(self, workspace_id: int) -> WorkspaceRow | None:
        """A workspace by id."""
        rows = await self.db.fetch(
            "SELECT * FROM batch_workspaces WHERE id = :id", {"id": workspace_id}
        )
        return WorkspaceRow.from_row(rows[0]) if rows else None

    async def workspaces(self, spec_id: int) -> list[WorkspaceRow]:
        """Every workspace of a spec, in resolution order."""
        rows = await self.db.fetch(
            "SELECT * FROM batch_workspaces WHERE batch_spec_id = :s ORDER BY id", {"s": spec_id}
        )
        return [WorkspaceRow.from_row(r) for r in rows]

    # -- step cache -------------------------------------------------------------------------

    async def cached(self, user: str, keys: Sequence[str]) -> dict[str, Any]:
        """The cached step results among `keys`, by key."""
        rows = await self._cache_rows(user, keys, "key, value")
        return {r["key"]: decode_json(r["value"]) for r in rows}

    async def cached_writers(self, user: str, keys: Sequence[str]) -> dict[str, int | None]:
        """Which of `keys` the cache holds, each with the job that wrote it: no values read
        (a resolution needs a value only for a changeset spec it renders)."""
        rows = await self._cache_rows(user, keys, "key, job_id")
        return {r["key"]: None if r["job_id"] is None else int(r["job_id"]) for r in rows}

    async def _cache_rows(self, user: str, keys: Sequence[str], columns: str) -> list[Any]:
        if not keys:
            return []
        names = {f"k{i}": key for i, key in enumerate(keys)}
        return await self.db.fetch(
            f"SELECT {columns} FROM batch_step_cache WHERE user_name = :user AND key IN ("
            + ", ".join(f":{n}" for n in names)
            + ")",
            {"user": user, **names},
        )

    async def cache(
        self, user: str, entries: Mapping[str, Any], *, job_id: int | None = None
    ) -> None:
        """Store step results by key, written by workspace job `job_id` (a newer result
        replaces an older one)."""
        if not entries:
            return
        now = self.clock.now()
        await self.db.executemany(
            "INSERT INTO batch_step_cache (user_name, key, value, created_at, job_id) "
            "VALUES (:user, :key, :value, :now, :job) ON CONFLICT (user_name, key) "
            "DO UPDATE SET value = excluded.value, created_at = excluded.created_at, "
            "job_id = excluded.job_id",
            [
                {"user": user, "key": k, "value": v, "now": now, "job": job_id}
                for k, v in entries.items()
            ],
        )

    # -- changeset specs --------------------------------------------------------------------

    async def replace_changeset_specs(
        self,
        spec_id: int,
        workspace_id: int | None,
        specs: Sequence[Mapping[str, Any]],
        *,
        result_key: str | None = None,
    ) -> None:
        """A workspace's changeset specs (an execution that ran again replaces its old ones),
        made from the result of step cache key `result_key`."""
        async with self.db.transaction() as tx:
            if workspace_id is not None:
                await tx.fetch(
                    "UPDATE batch_workspaces SET result_key = :k WHERE id = :w",
                    {"k": result_key, "w": workspace_id},
                )
            if workspace_id is None:
                await tx.fetch(
                    "DELETE FROM changeset_specs WHERE batch_spec_id = :s AND workspace_id IS NULL",
                    {"s": spec_id},
                )
            else:
                await tx.fetch(
                    "DELETE FROM changeset_specs WHERE workspace_id = :w", {"w": workspace_id}
                )
            for params in self._spec_params(spec_id, {workspace_id: specs}):
                await tx.fetch(_INSERT_SPEC, params)

    async def add_changeset_specs(
        self, spec_id: int, by_workspace: Mapping[int | None, Sequence[Mapping[str, Any]]]
    ) -> None:
        """The changeset specs of workspaces that have none yet, in one transaction."""
        rows = self._spec_params(spec_id, by_workspace)
        if rows:
            await self.db.executemany(_INSERT_SPEC, rows)

    def _spec_params(
        self, spec_id: int, by_workspace: Mapping[int | None, Sequence[Mapping[str, Any]]]
    ) -> list[dict[str, Any]]:
        now = self.clock.now()
        return [
            {
                **spec,
                "batch_spec_id": spec_id,
                "workspace_id": workspace_id,
                "published": {"published": spec.get("published")},
                "created_at": now,
            }
            for workspace_id, specs in by_workspace.items()
            for spec in specs
        ]

    async def changeset_specs(self, spec_id: int) -> list[ChangesetSpecRow]:
        """Every changeset spec of a batch spec."""
        rows = await self.db.fetch(
            "SELECT * FROM changeset_specs WHERE batch_spec_id = :s "
            "ORDER BY repo_name, head_ref, id",
            {"s": spec_id},
        )
        return [ChangesetSpecRow.from_row(r) for r in rows]
