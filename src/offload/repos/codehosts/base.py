"""The contract every code host keeps: open, update, close and read pull requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias

# What a pull request is on its host, in offload's words.
PullRequestState: TypeAlias = Literal["open", "draft", "merged", "closed"]
# Aggregated review and check states; None where the host has no such thing.
ReviewState: TypeAlias = Literal["approved", "changes_requested", "pending"]
ChecksState: TypeAlias = Literal["passed", "failed", "pending"]


class CodeHostError(RuntimeError):
    """The host refused or failed a call; the message says which call, what it said, what to do."""


class PullRequestNotFound(CodeHostError):
    """The pull request (or its repository) does not exist on the host, or is not visible."""


@dataclass(frozen=True)
class PullRequestDraft:
    """A pull request to open: `head_ref` (already pushed) into `base_ref` of `repo`."""

    repo: str  # the repository's path on the host, e.g. "org/project"
    base_ref: str  # a branch name, without refs/heads/
    head_ref: str
    title: str
    body: str = ""
    draft: bool = False
    # The namespace opening it (a batch change's): on the built-in host it may merge and close.
    author: str = ""


@dataclass(frozen=True)
class PullRequestChanges:
    """What to change on an existing pull request; None leaves a field as it is."""

    title: str | None = None
    body: str | None = None
    base_ref: str | None = None
    # False turns a draft into a ready pull request; True makes it a draft again.
    draft: bool | None = None
    # "open" reopens a closed pull request.
    reopen: bool = False


@dataclass(frozen=True)
class PullRequest:
    """A pull request as the host reports it now."""

    external_id: str  # the host's number for it, as text ("42"; GitLab's iid)
    state: PullRequestState
    title: str
    body: str
    base_ref: str
    head_ref: str
    url: str = ""
    review_state: ReviewState | None = None
    checks_state: ChecksState | None = None


class CodeHost(Protocol):
    """One code host (the built-in one, GitHub, GitLab, Gitea, ...)."""

    kind: str

    async def open(self, draft: PullRequestDraft) -> PullRequest:
        """Open a pull request; an existing open one for the same head and base is returned."""
        ...

    async def update(self, repo: str, external_id: str, changes: PullRequestChanges) -> PullRequest:
        """Change title, body, base, draft state, or reopen; the pull request afterwards."""
        ...

    async def close(self, repo: str, external_id: str) -> PullRequest:
        """Close without merging (closing a closed or merged one changes nothing)."""
        ...

    async def get(self, repo: str, external_id: str) -> PullRequest:
        """The pull request as it is now (PullRequestNotFound if it is gone)."""
        ...

    def push_url(self, repo: str) -> str:
        """Where the reconciler pushes branches of `repo`, credentials included."""
        ...
