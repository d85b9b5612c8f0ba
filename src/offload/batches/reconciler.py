"""`batches.reconciler`: makes each queued changeset on its code host what its spec says.

One changeset at a time: close it (the batch change dropped or closed it), import it (track an
existing pull request), or for a changeset offload makes: build the commit from the spec's
diff on the base commit in the mirror, push it to the head branch, then open or update the
pull request. Every call is idempotent (the same spec gives the same commit, opening an
existing pull request returns it), so a reconciler that dies half-way is simply run again.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from offload.batches.changesets import SPEC, STATE_TIMES, ChangesetRow
from offload.batches.results import loaded_diff
from offload.batches.store import BatchStore, ChangesetSpecRow
from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.db.values import parse_time
from offload.queue.consumer import Consumer, JobFailed
from offload.queue.record import Record
from offload.queue.store import SqlQueueStore
from offload.repos.codehosts.base import (
    CodeHost,
    CodeHostError,
    PullRequest,
    PullRequestChanges,
    PullRequestDraft,
)
from offload.repos.codehosts.hosts import CodeHosts
from offload.repos.commits import commit_diff, push
from offload.repos.mirror import GitError, Mirrors
from offload.repos.registry import RepoRegistry
from offload.worker.routine import ConsumerRoutine, Routine

if TYPE_CHECKING:
    from offload.worker.job import WorkerContext

log = logging.getLogger(__name__)


def _branch(ref: str) -> str:
    return ref.removeprefix("refs/heads/")


class Reconciler:
    """The handler of the `changesets` queue."""

    def __init__(
        self, db: Database, hosts: CodeHosts, mirrors: Mirrors, *, clock: Clock | None = None
    ) -> None:
        self.db = db
        self.hosts = hosts
        self.mirrors = mirrors
        self.clock = clock or SystemClock()
        self.store = BatchStore(db, self.clock)

    async def _row(self, changeset_id: int) -> ChangesetRow:
        rows = await self.db.fetch("SELECT * FROM changesets WHERE id = :id", {"id": changeset_id})
        if not rows:
            raise JobFailed(f"changeset {changeset_id} no longer exists")
        return ChangesetRow.from_row(rows[0])

    async def _spec(self, spec_id: int | None) -> ChangesetSpecRow | None:
        if spec_id is None:
            return None
        rows = await self.db.fetch("SELECT * FROM changeset_specs WHERE id = :id", {"id": spec_id})
        return ChangesetSpecRow.from_row(rows[0]) if rows else None

    async def _namespace(self, batch_change_id: int) -> str:
        rows = await self.db.fetch(
            "SELECT user_name FROM batch_changes WHERE id = :id", {"id": batch_change_id}
        )
        return str(rows[0]["user_name"]) if rows else ""

    async def _save(self, changeset_id: int, *, also: str = "", **values: Any) -> None:
        """Store `values` (and the SQL assignments `also`, over the same bound values)."""
        values["updated_at"] = now = self.clock.now()
        sets = ", ".join([f"{k} = :{k}" for k in values] + ([also] if also else []))
        await self.db.fetch(
            f"UPDATE changesets SET {sets} WHERE id = :id",
            {**values, "id": changeset_id, **({"now": now} if also else {})},
        )

    async def _record(self, changeset_id: int, pr: PullRequest, **values: Any) -> None:
        await self._save(
            changeset_id,
            also=STATE_TIMES,
            external_id=pr.external_id,
            external_state=pr.state,
            external_url=pr.url,
            review_state=pr.review_state,
            checks_state=pr.checks_state,
            synced_at=self.clock.now(),
            **values,
        )

    async def handle(self, record: Record) -> None:
        """Reconcile one changeset; a code host error errors it (retried with backoff)."""
        changeset = await self._row(record.id)
        try:
            host = await self.hosts.for_repo(changeset.repo_name)
            if changeset.closing:
                await self._close(changeset, host)
                return
            spec = await self._spec(changeset.spec_id)
            if spec is None:
                return
            if spec.kind == "existing":
                pr = await host.get(spec.repo_name, str(spec.external_id))
                await self._record(changeset.id, pr, publication_state="published")
                return
            await self._branch(changeset, spec, host)
        except (CodeHostError, GitError) as exc:
            raise RuntimeError(f"{changeset.repo_name}: {exc}") from exc

    async def _close(self, changeset: ChangesetRow, host: CodeHost) -> None:
        if changeset.external_id and changeset.external_state in ("open", "draft"):
            pr = await host.close(changeset.repo_name, changeset.external_id)
            await self._record(changeset.id, pr, closing=False)
        else:
            await self._save(changeset.id, closing=False)

    async def _branch(
        self, changeset: ChangesetRow, spec: ChangesetSpecRow, host: CodeHost
    ) -> None:
        published = spec.published
        if published is not True and published != "draft":
            return  # unpublished: nothing exists on the host yet
        head = _branch(spec.head_ref)
        base = _branch(spec.base_ref)
        created = await self._spec_created(spec.id)
        commit = await commit_diff(
            self.mirrors.existing(spec.repo_name),
            base_rev=spec.base_rev,
            diff=loaded_diff(spec.diff),
            message=spec.commit_message,
            author_name=spec.author_name,
            author_email=spec.author_email,
            when=created,
        )
        if commit != changeset.pushed_commit or head != changeset.head_ref:
            await push(
                self.mirrors.existing(spec.repo_name), commit, host.push_url(spec.repo_name), head
            )
            await self._save(changeset.id, pushed_commit=commit, head_ref=head)
        draft = published == "draft"
        if changeset.external_id is None:
            pr = await host.open(
                PullRequestDraft(
                    repo=spec.repo_name,
                    base_ref=base,
                    head_ref=head,
                    title=spec.title,
                    body=spec.body,
                    draft=draft,
                    author=await self._namespace(changeset.batch_change_id),
                )
            )
        else:
            current = await host.get(spec.repo_name, changeset.external_id)
            changes = PullRequestChanges(
                title=spec.title if current.title != spec.title else None,
                body=spec.body if current.body != spec.body else None,
                draft=draft if (current.state == "draft") != draft else None,
                reopen=current.state == "closed",
            )
            pr = current
            if changes != PullRequestChanges():
                pr = await host.update(spec.repo_name, changeset.external_id, changes)
        await self._record(
            changeset.id, pr, publication_state="draft" if pr.state == "draft" else "published"
        )

    async def _spec_created(self, spec_id: int) -> datetime | None:
        rows = await self.db.fetch(
            "SELECT created_at FROM changeset_specs WHERE id = :id", {"id": spec_id}
        )
        return parse_time(rows[0]["created_at"]) if rows else None


def code_hosts(context: WorkerContext, mirrors: Mirrors) -> CodeHosts:
    """The code hosts of the worker's settings (the reconciler's and the syncer's)."""
    return CodeHosts(
        context.db,
        RepoRegistry(context.db, clock=context.clock),
        mirrors,
        secrets=context.secrets,
        connections=context.settings.code_hosts,
        clock=context.clock,
    )


def build(context: WorkerContext) -> list[Routine]:
    """One consumer of the changesets queue."""
    mirrors = Mirrors.in_data_dir(context.settings.data_dir)
    hosts = code_hosts(context, mirrors)
    reconciler = Reconciler(context.db, hosts, mirrors, clock=context.clock)
    store = SqlQueueStore(context.db, SPEC, clock=context.clock)
    return [
        ConsumerRoutine(
            "batches.reconciler",
            lambda: Consumer(store, reconciler, holder="batches.reconciler", slots=4),
        )
    ]
