"""Pull requests of hosted repositories (registered from a local path): the store and the service.

A repository registered from a local path is hosted by offload itself: branches are pushed to
that repository and its pull requests live in the `pull_requests` table, numbered 1, 2, ...
per repository. Merging writes the merge commit into the hosted repository and then re-syncs
its mirror, so the server sees the new base at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.db.values import parse_time
from offload.repos import commits
from offload.repos.codehosts.base import (
    CodeHostError,
    PullRequestChanges,
    PullRequestDraft,
    PullRequestNotFound,
    PullRequestState,
)
from offload.repos.commits import MergeConflict
from offload.repos.mirror import GitError, Mirrors
from offload.repos.registry import Repo, RepoRegistry, is_local_path

log = logging.getLogger(__name__)

STATES: tuple[PullRequestState, ...] = get_args(PullRequestState)
LIVE: tuple[PullRequestState, ...] = ("open", "draft")
# Numbering only races when creates bypass the per-repository lock; a few retries settle it.
_CREATE_ATTEMPTS = 5
_DEFAULT_AUTHOR = ("offload", "offload@localhost")

_INSERT = """
INSERT INTO pull_requests
    (repo_name, number, title, body, base_ref, head_ref, state, author, created_at, updated_at)
VALUES (
    :repo,
    (SELECT COALESCE(MAX(number), 0) + 1 FROM pull_requests WHERE repo_name = :numbered),
    :title, :body, :base, :head, :state, :author, :now, :now
)
ON CONFLICT (repo_name, number) DO NOTHING
RETURNING *
"""
_FIND_LIVE = (
    "SELECT * FROM pull_requests WHERE repo_name = :repo AND base_ref = :base "
    "AND head_ref = :head AND state IN ('open', 'draft') ORDER BY number LIMIT 1"
)
# Serializes creates in one repository on PostgreSQL (SQLite's BEGIN IMMEDIATE already does),
# so that "return the open one, else create" cannot open two for the same branches.
_LOCK_REPO = "SELECT pg_advisory_xact_lock(hashtext(:key))"


class NotHosted(CodeHostError):
    """The repository is mirrored from a URL: its pull requests live on that host, not here."""


class PullRequestStateError(CodeHostError):
    """The pull request's state does not allow that (merging a draft, reopening a merged one)."""


@dataclass(frozen=True)
class StoredPullRequest:
    """One pull request of a hosted repository, as the `pull_requests` table holds it."""

    id: int
    repo_name: str
    number: int
    title: str
    body: str
    base_ref: str
    head_ref: str
    state: PullRequestState
    merge_commit: str | None
    created_at: datetime
    updated_at: datetime
    # The namespace that opened it: it may merge and close it (besides site admins).
    author: str = ""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StoredPullRequest:
        """Build from a row of the pull_requests table, decoding the backend's types."""
        created_at, updated_at = parse_time(row["created_at"]), parse_time(row["updated_at"])
        assert created_at is not None and updated_at is not None
        state = str(row["state"])
        if state not in STATES:
            raise ValueError(f"pull request {row['id']} has unknown state {state!r}")
        return cls(
            id=int(row["id"]),
            repo_name=str(row["repo_name"]),
            number=int(row["number"]),
            title=str(row["title"]),
            body=str(row["body"] or ""),
            base_ref=str(row["base_ref"]),
            head_ref=str(row["head_ref"]),
            state=state,
            merge_commit=row["merge_commit"],
            created_at=created_at,
            updated_at=updated_at,
            author=str(row.get("author") or ""),
        )

    @property
    def ref(self) -> str:
        """How messages name it: `#3 of project`."""
        return f"#{self.number} of {self.repo_name}"


class PullRequestStore:
    """The `pull_requests` table: create, get, list, update and change state."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    async def create(
        self,
        repo: str,
        *,
        title: str,
        base_ref: str,
        head_ref: str,
        body: str = "",
        draft: bool = False,
        reuse_live: bool = False,
        author: str = "",
    ) -> StoredPullRequest:
        """A new pull request numbered after the repository's last one.

        With `reuse_live`, an open or draft one from `head_ref` into `base_ref` is returned
        instead of a second being created.
        """
        params = {
            "repo": repo,
            # The same value twice: PostgreSQL types the two uses differently (varchar, text).
            "numbered": repo,
            "title": title,
            "body": body,
            "base": base_ref,
            "head": head_ref,
            "state": "draft" if draft else "open",
            "author": author,
            "now": self.clock.now(),
        }
        async with self.db.transaction() as tx:
            if self.db.dialect == "postgresql":
                await tx.fetch(_LOCK_REPO, {"key": f"pull_requests:{repo}"})
            if reuse_live:
                rows = await tx.fetch(_FIND_LIVE, params)
                if rows:
                    return StoredPullRequest.from_row(rows[0])
            for _ in range(_CREATE_ATTEMPTS):
                # Each try reads MAX(number) afresh, past whichever create took the last one.
                rows = await tx.fetch(_INSERT, params)
                if rows:
                    return StoredPullRequest.from_row(rows[0])
        raise RuntimeError(
            f"could not number a new pull request of {repo} after {_CREATE_ATTEMPTS} attempts: "
            "too many concurrent creates; try again"
        )

    async def get(self, repo: str, number: int) -> StoredPullRequest | None:
        """Pull request `number` of `repo`, if any."""
        rows = await self.db.fetch(
            "SELECT * FROM pull_requests WHERE repo_name = :repo AND number = :number",
            {"repo": repo, "number": number},
        )
        return StoredPullRequest.from_row(rows[0]) if rows else None

    async def require(self, repo: str, number: int) -> StoredPullRequest:
        """Pull request `number` of `repo`; PullRequestNotFound saying how to find the right one."""
        found = await self.get(repo, number)
        if found is None:
            raise PullRequestNotFound(f"repository {repo} has no pull request #{number}")
        return found

    async def list(
        self,
        repo: str | None = None,
        state: PullRequestState | None = None,
        *,
        limit: int | None = None,
    ) -> list[StoredPullRequest]:
        """Pull requests by repository and number, of one repository and one state if given
        (the first `limit` of them, if given)."""
        where: list[str] = []
        params: dict[str, Any] = {}
        if repo is not None:
            where.append("repo_name = :repo")
            params["repo"] = repo
        if state is not None:
            where.append("state = :state")
            params["state"] = state
        sql = "SELECT * FROM pull_requests"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY repo_name, number"
        if limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = limit
        rows = await self.db.fetch(sql, params)
        return [StoredPullRequest.from_row(row) for row in rows]

    async def page(
        self,
        repo: str,
        state: PullRequestState | None = None,
        *,
        before: int | None = None,
        limit: int,
    ) -> Sequence[StoredPullRequest]:
        """Pull requests of `repo`, newest first, numbered below `before` if given (a keyset
        page), of one state if given."""
        sql = "SELECT * FROM pull_requests WHERE repo_name = :repo"
        params: dict[str, Any] = {"repo": repo, "limit": limit}
        if state is not None:
            sql += " AND state = :state"
            params["state"] = state
        if before is not None:
            sql += " AND number < :before"
            params["before"] = before
        rows = await self.db.fetch(sql + " ORDER BY number DESC LIMIT :limit", params)
        return [StoredPullRequest.from_row(row) for row in rows]

    async def update(
        self,
        repo: str,
        number: int,
        *,
        title: str | None = None,
        body: str | None = None,
        base_ref: str | None = None,
        state: PullRequestState | None = None,
        merge_commit: str | None = None,
        only_from: Collection[PullRequestState] | None = None,
    ) -> StoredPullRequest | None:
        """Change the fields given; None if there is none, or its state is not in `only_from`.

        `only_from` makes it a compare-and-swap: a concurrent change of state wins, not this.
        """
        changes = {"title": title, "body": body, "base_ref": base_ref, "state": state}
        changes["merge_commit"] = merge_commit
        sets = [f"{column} = :{column}" for column, value in changes.items() if value is not None]
        params: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
        params.update({"repo": repo, "number": number, "now": self.clock.now()})
        sql = (
            f"UPDATE pull_requests SET {', '.join([*sets, 'updated_at = :now'])} "
            "WHERE repo_name = :repo AND number = :number"
        )
        if only_from is not None:
            sql += _state_in(only_from, params)
        rows = await self.db.fetch(sql + " RETURNING *", params)
        return StoredPullRequest.from_row(rows[0]) if rows else None

    async def set_state(
        self,
        repo: str,
        number: int,
        state: PullRequestState,
        *,
        merge_commit: str | None = None,
        only_from: Collection[PullRequestState] | None = None,
    ) -> StoredPullRequest | None:
        """Move to `state` (recording `merge_commit`); None as for update()."""
        return await self.update(
            repo, number, state=state, merge_commit=merge_commit, only_from=only_from
        )


def _state_in(states: Collection[PullRequestState], params: dict[str, Any]) -> str:
    """` AND state IN (...)` with one bound parameter per state."""
    names = []
    for i, state in enumerate(states):
        params[f"from_{i}"] = state
        names.append(f":from_{i}")
    return f" AND state IN ({', '.join(names)})" if names else " AND 1 = 0"


class PullRequests:
    """Open, change, merge and close pull requests of hosted repositories."""

    def __init__(
        self,
        store: PullRequestStore,
        registry: RepoRegistry,
        mirrors: Mirrors,
        *,
        author: tuple[str, str] = _DEFAULT_AUTHOR,
    ) -> None:
        self.store = store
        self.registry = registry
        self.mirrors = mirrors
        self.author_name, self.author_email = author

    async def hosted(self, name: str) -> Repo:
        """The registered repository `name`, if offload hosts it; NotHosted if it mirrors a URL."""
        repo = await self.registry.get(name)
        if repo is None:
            raise PullRequestNotFound(
                f"no repository named {name!r} is registered; see `offload repos list`"
            )
        if not is_local_path(repo.source):
            raise NotHosted(
                f"repository {name} is mirrored from {repo.display_source}; "
                "its pull requests live on that host"
            )
        if not await asyncio.to_thread(os.path.isdir, repo.source):
            raise CodeHostError(
                f"repository {name} is hosted at {repo.source}, which no longer exists; "
                "restore it or remove the repository with `offload repos remove`"
            )
        return repo

    async def open(self, draft: PullRequestDraft) -> StoredPullRequest:
        """Open `draft.head_ref` into `draft.base_ref`, or return the live one between them."""
        repo = await self.hosted(draft.repo)
        if not draft.title.strip():
            raise CodeHostError(f"a pull request of {repo.name} needs a title")
        if draft.head_ref == draft.base_ref:
            raise CodeHostError(
                f"a pull request of {repo.name} cannot merge {draft.head_ref} into itself"
            )
        await self._require_branch(repo, draft.head_ref)
        await self._require_branch(repo, draft.base_ref)
        return await self.store.create(
            repo.name,
            title=draft.title,
            body=draft.body,
            base_ref=draft.base_ref,
            head_ref=draft.head_ref,
            draft=draft.draft,
            reuse_live=True,
            author=draft.author,
        )

    async def get(self, name: str, number: int) -> StoredPullRequest:
        """Pull request `number` of hosted repository `name`."""
        repo = await self.hosted(name)
        return await self.store.require(repo.name, number)

    async def update(
        self, name: str, number: int, changes: PullRequestChanges
    ) -> StoredPullRequest:
        """Apply `changes` all at once; PullRequestStateError when its state forbids them."""
        repo = await self.hosted(name)
        pr = await self.store.require(repo.name, number)
        state: PullRequestState = pr.state
        if changes.reopen and state == "merged":
            raise PullRequestStateError(
                f"pull request {pr.ref} is merged and cannot be reopened; open a new one"
            )
        if changes.reopen and state == "closed":
            state = "open"
        if changes.draft is not None or changes.base_ref is not None:
            if state not in LIVE:
                raise PullRequestStateError(
                    f"pull request {pr.ref} is {state}: reopen it before changing its base "
                    "or draft state"
                )
            if changes.draft is not None:
                state = "draft" if changes.draft else "open"
        if changes.base_ref is not None and changes.base_ref != pr.base_ref:
            if changes.base_ref == pr.head_ref:
                raise CodeHostError(f"pull request {pr.ref} cannot merge {pr.head_ref} into itself")
            await self._require_branch(repo, changes.base_ref)
        if changes.title is not None and not changes.title.strip():
            raise CodeHostError(f"pull request {pr.ref} needs a title")
        updated = await self.store.update(
            repo.name,
            number,
            title=changes.title,
            body=changes.body,
            base_ref=changes.base_ref,
            state=state if state != pr.state else None,
            only_from=(pr.state,),
        )
        if updated is None:
            raise PullRequestStateError(
                f"pull request {pr.ref} changed while it was being updated; try again"
            )
        return updated

    async def close(self, name: str, number: int) -> StoredPullRequest:
        """Close without merging; closing a closed or merged one changes nothing."""
        repo = await self.hosted(name)
        pr = await self.store.require(repo.name, number)
        if pr.state not in LIVE:
            return pr
        closed = await self.store.set_state(repo.name, number, "closed", only_from=LIVE)
        return closed or await self.store.require(repo.name, number)

    async def merge(self, name: str, number: int) -> StoredPullRequest:
        """Merge head into base in the hosted repository, mark it merged, re-sync the mirror."""
        repo = await self.hosted(name)
        pr = await self.store.require(repo.name, number)
        if pr.state == "draft":
            raise PullRequestStateError(
                f"pull request {pr.ref} is a draft: mark it ready for review before merging"
            )
        if pr.state == "merged":
            raise PullRequestStateError(
                f"pull request {pr.ref} is already merged (as {pr.merge_commit})"
            )
        if pr.state == "closed":
            raise PullRequestStateError(
                f"pull request {pr.ref} is closed: reopen it before merging"
            )
        try:
            commit = await commits.merge(
                Path(repo.source),
                base_ref=pr.base_ref,
                head_ref=pr.head_ref,
                message=f"Merge pull request #{pr.number} from {pr.head_ref}\n\n{pr.title}\n",
                author_name=self.author_name,
                author_email=self.author_email,
                when=self.store.clock.now(),
            )
        except MergeConflict:
            raise
        except GitError as exc:  # a missing branch, a checked-out base, base moved meanwhile
            raise CodeHostError(f"cannot merge pull request {pr.ref}: {exc}") from exc
        # The hosted repository is the truth: once base holds the merge, the pull request is
        # merged, even if it was closed meanwhile.
        merged = await self.store.set_state(repo.name, number, "merged", merge_commit=commit)
        assert merged is not None, "pull requests are never deleted"
        await self._resync(repo)
        return merged

    async def diff(self, name: str, number: int, *, max_bytes: int) -> tuple[bytes, bool]:
        """What pull request `number` changes (at most `max_bytes`; True when cut there).

        A live or closed one: its head against where it forked from base (`base...head`). A
        merged one: what its merge commit brought into base, so it reads the same afterwards.
        """
        repo = await self.hosted(name)
        pr = await self.store.require(repo.name, number)
        path = Path(repo.source)
        try:
            if pr.state == "merged" and pr.merge_commit:
                parents = await commits.parents(path, pr.merge_commit)
                if len(parents) < 2:
                    # Head was already in base: merging it changed nothing.
                    return b"", False
                return await commits.diff(path, parents[0], pr.merge_commit, max_bytes=max_bytes)
            base = await commits.branch_commit(path, pr.base_ref)
            head = await commits.branch_commit(path, pr.head_ref)
            if base is None or head is None:
                gone = pr.base_ref if base is None else pr.head_ref
                raise CodeHostError(
                    f"pull request {pr.ref} has no diff: its branch {gone!r} is gone from "
                    f"{repo.source}"
                )
            fork = await commits.merge_base(path, base, head)
            return await commits.diff(path, fork or base, head, max_bytes=max_bytes)
        except GitError as exc:
            raise CodeHostError(f"cannot read the diff of pull request {pr.ref}: {exc}") from exc

    async def _resync(self, repo: Repo) -> None:
        """Fetch the hosted repository into its mirror; a failure is recorded, not raised."""
        try:
            state = await self.mirrors.sync(repo.name, repo.source)
        except (GitError, OSError) as exc:
            log.warning("repository %s: sync after merge failed: %s", repo.name, exc)
            await self.registry.record_failure(repo.name, str(exc))
            return
        await self.registry.record_success(
            repo.name, default_branch=state.default_branch, head_commit=state.head_commit
        )

    async def _require_branch(self, repo: Repo, branch: str) -> None:
        """CodeHostError unless `branch` exists in the hosted repository."""
        try:
            await commits.check_branch_name(Path(repo.source), branch)
        except ValueError as exc:
            raise CodeHostError(f"repository {repo.name}: {exc}") from None
        if await commits.branch_commit(Path(repo.source), branch) is None:
            raise CodeHostError(
                f"repository {repo.name} has no branch {branch!r}; push it to {repo.source} first"
            )


__all__ = [
    "LIVE",
    "STATES",
    "NotHosted",
    "PullRequestStateError",
    "PullRequestStore",
    "PullRequests",
    "StoredPullRequest",
]
