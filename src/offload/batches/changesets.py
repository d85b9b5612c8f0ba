"""Batch changes and their changesets: rows, and the plan that a preview shows and apply runs.

A changeset spec matches the changeset of the same batch change in the same repository with
the same head branch (imports: the same pull request). Apply then creates what is new, moves
matched changesets to their new spec, and closes (or detaches) what the spec no longer has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from offload.batches.store import ChangesetSpecRow
from offload.db.values import parse_time
from offload.queue.spec import QueueSpec

SPEC = QueueSpec(
    name="changesets",
    table="changesets",
    columns=("batch_change_id", "repo_name"),
    stalled_after=timedelta(seconds=60),
    max_resets=5,
    max_retries=5,
    retry_backoff=timedelta(seconds=5),
    max_backoff=timedelta(minutes=10),
    retention=None,
)

# What an UPDATE that stores a pull request's state (bound as :external_state, at :now) also
# sets: the times the burndown counts. Published once the host has it, whatever its state;
# merged and closed when it is so now (a reopened one is no longer closed). The casts give
# the state the column's type, as its assignment does: PostgreSQL wants one type per value.
_STATE = "CAST(:external_state AS VARCHAR(16))"
STATE_TIMES = (
    "published_at = COALESCE(published_at, :now), "
    f"merged_at = CASE WHEN {_STATE} = 'merged' THEN COALESCE(merged_at, :now) END, "
    f"closed_at = CASE WHEN {_STATE} = 'closed' THEN COALESCE(closed_at, :now) END"
)


@dataclass(frozen=True)
class ChangesetRow:
    """A pull request a batch change owns or tracks, and what the reconciler made of it."""

    id: int
    state: str
    failure_message: str | None
    batch_change_id: int
    repo_name: str
    spec_id: int | None
    previous_spec_id: int | None
    owned: bool
    publication_state: str
    external_id: str | None
    external_state: str | None
    external_url: str | None
    review_state: str | None
    checks_state: str | None
    head_ref: str | None
    pushed_commit: str | None
    closing: bool
    detached: bool
    synced_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ChangesetRow:
        """Build from a changesets row."""
        return cls(
            id=int(row["id"]),
            state=row["state"],
            failure_message=row["failure_message"],
            batch_change_id=int(row["batch_change_id"]),
            repo_name=row["repo_name"],
            spec_id=row["spec_id"],
            previous_spec_id=row["previous_spec_id"],
            owned=bool(row["owned"]),
            publication_state=row["publication_state"],
            external_id=row["external_id"],
            external_state=row["external_state"],
            external_url=row["external_url"],
            review_state=row["review_state"],
            checks_state=row["checks_state"],
            head_ref=row["head_ref"],
            pushed_commit=row["pushed_commit"],
            closing=bool(row["closing"]),
            detached=bool(row["detached"]),
            synced_at=parse_time(row["synced_at"]),
        )

    @property
    def status(self) -> str:
        """One word for the burndown: what a user would call this changeset now."""
        if self.detached:
            return "detached"
        if self.state in ("failed", "errored"):
            return "failed"
        if self.state in ("queued", "processing"):
            return "processing"
        if self.external_state:
            return self.external_state
        return "unpublished"


@dataclass(frozen=True)
class Operation:
    """What apply will do for one changeset spec (or to one changeset the spec dropped)."""

    repo_name: str
    head_ref: str
    actions: tuple[str, ...]
    title: str = ""
    diff_added: int = 0
    diff_deleted: int = 0
    spec_id: int | None = None
    changeset_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        return {
            "repo": self.repo_name,
            "branch": self.head_ref,
            "actions": list(self.actions),
            "title": self.title,
            "added": self.diff_added,
            "deleted": self.diff_deleted,
            "specId": self.spec_id,
            "changesetId": self.changeset_id,
        }


@dataclass(frozen=True)
class Plan:
    """Every operation of one apply."""

    operations: list[Operation] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many changesets each action touches."""
        out: dict[str, int] = {}
        for op in self.operations:
            for action in op.actions:
                out[action] = out.get(action, 0) + 1
        return out


def _published(value: bool | str | None) -> str:
    if value is True:
        return "published"
    if value == "draft":
        return "draft"
    return "unpublished"


def _key(spec: ChangesetSpecRow) -> tuple[str, str]:
    return (spec.repo_name, spec.external_id or "" if spec.kind == "existing" else spec.head_ref)


def plan(
    specs: Sequence[ChangesetSpecRow],
    changesets: Sequence[ChangesetRow],
    current: Mapping[int, ChangesetSpecRow],
) -> Plan:
    """The operations that take `changesets` (with their `current` specs) to `specs`."""
    by_key: dict[tuple[str, str], ChangesetRow] = {}
    for cs in changesets:
        if cs.detached:
            continue
        spec = current.get(cs.spec_id) if cs.spec_id is not None else None
        if spec is not None:
            by_key[_key(spec)] = cs
        elif not cs.owned and cs.external_id:
            by_key[(cs.repo_name, cs.external_id)] = cs
    ops: list[Operation] = []
    matched: set[int] = set()
    for spec in specs:
        found = by_key.get(_key(spec))
        actions: list[str] = []
        if found is None:
            if spec.kind == "existing":
                actions = ["import"]
            else:
                target = _published(spec.published)
                actions = ["create"] + ([] if target == "unpublished" else ["push", "publish"])
                if target == "draft":
                    actions[-1] = "publish-draft"
        else:
            cs = found
            matched.add(cs.id)
            old = current.get(cs.spec_id) if cs.spec_id is not None else None
            if spec.kind == "branch":
                target = _published(spec.published)
                was = cs.publication_state
                if target != "unpublished" and was == "unpublished":
                    actions += ["push", "publish-draft" if target == "draft" else "publish"]
                elif target == "published" and was == "draft":
                    actions.append("undraft")
                if old is not None and was != "unpublished" and target != "unpublished":
                    if old.diff != spec.diff or old.base_rev != spec.base_rev:
                        if "push" not in actions:
                            actions.append("push")
                    if (old.title, old.body) != (spec.title, spec.body):
                        actions.append("update")
                if cs.external_state == "closed" and target != "unpublished":
                    actions.append("reopen")
            if not actions:
                actions = ["none"]
        ops.append(
            Operation(
                repo_name=spec.repo_name,
                head_ref=spec.head_ref or f"#{spec.external_id}",
                actions=tuple(actions),
                title=spec.title,
                diff_added=spec.diff_added,
                diff_deleted=spec.diff_deleted,
                spec_id=spec.id,
                changeset_id=found.id if found is not None else None,
            )
        )
    for cs in changesets:
        if cs.detached or cs.id in matched:
            continue
        spec = current.get(cs.spec_id) if cs.spec_id is not None else None
        open_on_host = cs.external_state in ("open", "draft")
        dropped = ("close", "detach") if cs.owned and open_on_host else ("detach",)
        ops.append(
            Operation(
                repo_name=cs.repo_name,
                head_ref=cs.head_ref or (spec.head_ref if spec else "") or f"#{cs.external_id}",
                actions=dropped,
                title=spec.title if spec else "",
                changeset_id=cs.id,
            )
        )
    ops.sort(key=lambda o: (o.repo_name, o.head_ref))
    return Plan(ops)
