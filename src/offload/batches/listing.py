"""Page-sized reads of batch changes for the web interface: a spec's workspaces, one
workspace's logs, outputs and changes, a batch change's changesets and the operations of a
preview, each a page at a time by key, so that a batch change of tens of thousands of
changesets answers as fast as one of ten.

Who may read what is the routes' concern (as for BatchService): these take rows the caller
may see already.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from offload.batches import changesets as cs
from offload.batches.burndown import Burndown, burndown
from offload.batches.results import loaded_diff
from offload.batches.service import BatchService, workspace_state
from offload.batches.store import BatchSpecRow, ChangesetSpecRow

# A workspace's state in SQL: the words of service.workspace_state(), so a page filters by it.
_WORKSPACE_STATE = (
    "CASE WHEN w.ignored THEN 'ignored' WHEN w.skipped THEN 'skipped' "
    "WHEN w.cached_result_found THEN 'cached' ELSE COALESCE(j.state, 'pending') END"
)
_WORKSPACES = """
SELECT w.id, w.repo_name, w.path, w.branch, w.ignored, w.skipped, w.cached_result_found,
       w.cached_steps, w.result_key, j.id AS job_id, j.state, j.failure_message,
       j.started_at, j.finished_at, j.num_failures
FROM batch_workspaces w
LEFT JOIN batch_workspace_jobs j ON j.workspace_id = w.id
WHERE w.batch_spec_id = :spec AND w.id > :after {where}
ORDER BY w.id
LIMIT :limit
"""

# A changeset's status in SQL: the words of ChangesetRow.status, so a page filters by it.
_STATUS = (
    "CASE WHEN c.detached THEN 'detached' "
    "WHEN c.state IN ('failed', 'errored') THEN 'failed' "
    "WHEN c.state IN ('queued', 'processing') THEN 'processing' "
    "WHEN c.external_state IS NOT NULL THEN c.external_state ELSE 'unpublished' END"
)
_CHANGESETS = f"""
SELECT c.id, c.repo_name, c.head_ref, c.external_id, c.external_url, c.review_state,
       c.checks_state, c.failure_message, c.updated_at, {_STATUS} AS status,
       s.title, s.head_ref AS spec_head_ref, s.diff_added, s.diff_deleted
FROM changesets c
LEFT JOIN changeset_specs s ON s.id = c.spec_id
WHERE c.batch_change_id = :change AND c.id > :after {{where}}
ORDER BY c.id
LIMIT :limit
"""
_STATUS_COUNTS = f"""
SELECT {_STATUS} AS status, COUNT(*) AS n FROM changesets c
WHERE c.batch_change_id = :change GROUP BY 1
"""
# What a plan depends on besides its spec: the changesets it would change, and the spec's
# own changeset specs (a retried workspace replaces its own).
_PLAN_INPUTS = """
SELECT (SELECT COUNT(*) FROM changeset_specs WHERE batch_spec_id = :spec) AS specs,
       (SELECT MAX(id) FROM changeset_specs WHERE batch_spec_id = :spec) AS last_spec,
       (SELECT COUNT(*) FROM changesets WHERE batch_change_id = :change) AS changesets,
       (SELECT MAX(updated_at) FROM changesets WHERE batch_change_id = :change) AS changed
"""
# Plans kept in memory, the most recently read last: a reader pages through one preview.
PLANS_KEPT = 4
# A batch change's summary (burndown and counts) that took this long to count is kept for
# ten times as long (at most SUMMARY_KEPT_AT_MOST): a small batch change is counted on every
# view, one of 45,000 changesets costs its viewers at most a tenth of the server's time.
SUMMARY_CACHED_FROM = 0.05
SUMMARY_KEPT_AT_MOST = 30.0
SUMMARIES_KEPT = 64


@dataclass(frozen=True)
class OperationsPage:
    """A page of a preview's operations, with the counts its filters show."""

    operations: list[cs.Operation]
    counts: dict[str, int]
    total: int
    # The key of the page after this one, or None on the last.
    next_after: str | None


@dataclass(frozen=True)
class ChangeSummary:
    """A batch change's burndown and its changesets counted by status, as of `counted_at`."""

    burndown: Burndown
    counts: dict[str, int]
    counted_at: datetime
    # Whether this was counted for an earlier view (and is at most a few seconds old).
    kept: bool = False


def operation_key(op: cs.Operation) -> str:
    """Where an operation sorts in a preview (repository, then branch), unique: a page's key."""
    return f"{op.repo_name}\x1f{op.head_ref}\x1f{op.spec_id or ''}\x1f{op.changeset_id or ''}"


# A plan's operations in key order, their keys, and how many operations do each action.
_Plan = tuple[list[cs.Operation], list[str], dict[str, int]]


class BatchListing:
    """Page-sized reads of specs, workspaces, changesets and previews."""

    def __init__(
        self, service: BatchService, *, summaries_cached_from: float = SUMMARY_CACHED_FROM
    ) -> None:
        self.service = service
        self.summaries_cached_from = summaries_cached_from
        self.db = service.db
        self._plans: OrderedDict[tuple[Any, ...], _Plan] = OrderedDict()
        # Summaries by batch change, with the monotonic time each may be shown until.
        self._summaries: dict[int, tuple[float, ChangeSummary]] = {}

    async def specs(self, namespaces: Sequence[str], *, limit: int = 20) -> list[dict[str, Any]]:
        """The newest batch specs of `namespaces`, applied or not."""
        marks = {f"n{i}": n for i, n in enumerate(namespaces)}
        if not marks:
            return []
        return await self.db.fetch(
            "SELECT id, rand_id, user_name, name, created_at, created_by, applied_at, "
            "runs_locally FROM batch_specs WHERE user_name IN ("
            + ", ".join(":" + k for k in marks)
            + ") ORDER BY id DESC LIMIT :limit",
            {**marks, "limit": limit},
        )

    async def specs_of(self, user: str, name: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The newest specs of one batch change (or of one name not yet applied)."""
        return await self.db.fetch(
            "SELECT id, rand_id, created_at, created_by, applied_at FROM batch_specs "
            "WHERE user_name = :u AND name = :n ORDER BY id DESC LIMIT :limit",
            {"u": user, "n": name, "limit": limit},
        )

    async def workspaces(
        self, spec_id: int, *, state: str | None = None, after: int = 0, limit: int = 50
    ) -> list[dict[str, Any]]:
        """A page of a spec's workspaces by id, each with its state (only `state`, if given)."""
        where = f"AND {_WORKSPACE_STATE} = :state" if state else ""
        values: dict[str, Any] = {"spec": spec_id, "after": after, "limit": limit}
        if state:
            values["state"] = state
        rows = await self.db.fetch(_WORKSPACES.format(where=where), values)
        return [{**r, "state": workspace_state(r)} for r in rows]

    async def workspace(self, row: BatchSpecRow, workspace_id: int) -> dict[str, Any] | None:
        """One workspace of `row`: its state, logs, the outputs of its steps and its changes."""
        rows = await self.workspaces(row.id, after=workspace_id - 1, limit=1)
        if not rows or int(rows[0]["id"]) != workspace_id:
            return None
        w = rows[0]
        job_id = w["job_id"]
        logs = await self.service.executions.logs(int(job_id)) if job_id else []
        outputs: Mapping[str, Any] = {}
        if w["result_key"]:
            cached = await self.service.store.cached(row.user_name, [str(w["result_key"])])
            result = cached.get(str(w["result_key"])) or {}
            outputs = dict(result.get("outputs") or {}) if isinstance(result, dict) else {}
        specs = await self.db.fetch(
            "SELECT * FROM changeset_specs WHERE workspace_id = :w ORDER BY id",
            {"w": workspace_id},
        )
        return {
            **w,
            "logs": logs,
            "outputs": outputs,
            "changeset_specs": [ChangesetSpecRow.from_row(s) for s in specs],
        }

    async def changeset_specs(self, ids: Sequence[int]) -> list[ChangesetSpecRow]:
        """Changeset specs by id, in the order given (those that exist)."""
        found = await self.service.changeset_specs_by_id(ids)
        return [found[i] for i in ids if i in found]

    async def changesets(
        self, change_id: int, *, status: str | None = None, after: int = 0, limit: int = 50
    ) -> list[dict[str, Any]]:
        """A page of a batch change's changesets by id (only those in `status`, if given)."""
        where = f"AND {_STATUS} = :status" if status else ""
        values: dict[str, Any] = {"change": change_id, "after": after, "limit": limit}
        if status:
            values["status"] = status
        return await self.db.fetch(_CHANGESETS.format(where=where), values)

    async def status_counts(self, change_id: int) -> dict[str, int]:
        """How many changesets of a batch change are in each status."""
        rows = await self.db.fetch(_STATUS_COUNTS, {"change": change_id})
        return {str(r["status"]): int(r["n"]) for r in rows}

    async def summary(self, change_id: int, created: datetime) -> ChangeSummary:
        """The burndown of batch change `change_id` since `created`, and its status counts."""
        kept = self._summaries.get(change_id)
        if kept is not None and time.monotonic() < kept[0]:
            return replace(kept[1], kept=True)
        began = time.monotonic()
        now = datetime.now(UTC)
        found = ChangeSummary(
            burndown=await burndown(self.db, change_id, created, now),
            counts=await self.status_counts(change_id),
            counted_at=now,
        )
        took = time.monotonic() - began
        self._summaries.pop(change_id, None)
        if took >= self.summaries_cached_from:
            self._summaries[change_id] = (
                time.monotonic() + min(SUMMARY_KEPT_AT_MOST, 10 * took),
                found,
            )
            while len(self._summaries) > SUMMARIES_KEPT:
                self._summaries.pop(next(iter(self._summaries)))
        return found

    async def operations(
        self, row: BatchSpecRow, *, action: str | None = None, after: str = "", limit: int = 25
    ) -> OperationsPage:
        """A page of what applying `row` would do, after the operation keyed `after`."""
        ops, keys, counts = await self._plan(row)
        index = bisect.bisect_right(keys, after) if after else 0
        chosen: list[cs.Operation] = []
        more = False
        for op in ops[index:]:
            if action is not None and action not in op.actions:
                continue
            if len(chosen) == limit:
                more = True
                break
            chosen.append(op)
        return OperationsPage(
            operations=chosen,
            counts=counts,
            total=len(ops),
            next_after=operation_key(chosen[-1]) if more else None,
        )

    async def _plan(self, row: BatchSpecRow) -> _Plan:
        change = await self.service.find_change(row.user_name, row.name)
        inputs = await self.db.fetch(
            _PLAN_INPUTS, {"spec": row.id, "change": int(change["id"]) if change else -1}
        )
        key = (row.id, *(str(v) for v in inputs[0].values()))
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        plan = await self.service.plan(row)
        ops = sorted(plan.operations, key=operation_key)
        counts: dict[str, int] = {}
        for op in ops:
            for name in op.actions:
                counts[name] = counts.get(name, 0) + 1
        entry = (ops, [operation_key(op) for op in ops], counts)
        self._plans[key] = entry
        while len(self._plans) > PLANS_KEPT:
            self._plans.popitem(last=False)
        return entry


def diff_text(spec: ChangesetSpecRow) -> str:
    """A changeset spec's diff as text (bytes that are not UTF-8 replaced)."""
    return loaded_diff(spec.diff).decode("utf-8", errors="replace")
