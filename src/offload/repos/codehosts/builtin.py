"""The built-in code host: repositories registered from a local path, pull requests in offload."""

from __future__ import annotations

import subprocess

from offload.repos.codehosts.base import (
    CodeHostError,
    PullRequest,
    PullRequestChanges,
    PullRequestDraft,
    PullRequestNotFound,
)
from offload.repos.mirror import READ_TIMEOUT, Mirrors, git_env
from offload.repos.pulls import NotHosted, PullRequests, PullRequestStore, StoredPullRequest
from offload.repos.registry import RepoNameError, RepoRegistry, is_local_path, redact_source

KIND = "builtin"


def pull_request_url(repo: str, number: int) -> str:
    """Where a built-in pull request is found: `offload://<repo>/pulls/<number>`."""
    return f"offload://{repo}/pulls/{number}"


def to_pull_request(stored: StoredPullRequest) -> PullRequest:
    """A stored pull request as the CodeHost contract reports it."""
    return PullRequest(
        external_id=str(stored.number),
        state=stored.state,
        title=stored.title,
        body=stored.body,
        base_ref=stored.base_ref,
        head_ref=stored.head_ref,
        url=pull_request_url(stored.repo_name, stored.number),
    )


def _number(repo: str, external_id: str) -> int:
    """The pull request number `external_id` stands for; PullRequestNotFound if none can."""
    if not external_id.isascii() or not external_id.isdigit() or int(external_id) < 1:
        raise PullRequestNotFound(
            f"repository {repo} has no pull request {external_id!r}: numbers are 1, 2, ..."
        )
    return int(external_id)


class BuiltinHost:
    """The CodeHost of hosted repositories: branches pushed to their path, pull requests here."""

    kind = KIND

    def __init__(self, store: PullRequestStore, registry: RepoRegistry, mirrors: Mirrors) -> None:
        self.pulls = PullRequests(store, registry, mirrors)
        self.mirrors = mirrors

    async def open(self, draft: PullRequestDraft) -> PullRequest:
        """Open a pull request; an open or draft one for the same head and base is returned."""
        return to_pull_request(await self.pulls.open(draft))

    async def update(self, repo: str, external_id: str, changes: PullRequestChanges) -> PullRequest:
        """Change title, body, base, draft state, or reopen; the pull request afterwards."""
        number = _number(repo, external_id)
        return to_pull_request(await self.pulls.update(repo, number, changes))

    async def close(self, repo: str, external_id: str) -> PullRequest:
        """Close without merging (closing a closed or merged one changes nothing)."""
        return to_pull_request(await self.pulls.close(repo, _number(repo, external_id)))

    async def get(self, repo: str, external_id: str) -> PullRequest:
        """The pull request as it is now (PullRequestNotFound if there is none)."""
        return to_pull_request(await self.pulls.get(repo, _number(repo, external_id)))

    def push_url(self, repo: str) -> str:
        """The hosted repository's local path, which branches of `repo` are pushed to."""
        try:
            config = self.mirrors.path(repo) / "config"
        except RepoNameError as exc:
            raise PullRequestNotFound(str(exc)) from None
        if not config.is_file():
            raise CodeHostError(
                f"repository {repo} has no mirror at {config.parent}: register it with "
                "`offload repos add` or mirror it with `offload repos sync`"
            )
        # The contract's push_url is synchronous and the registry is not; every sync points the
        # mirror's origin at the registry's source, so the mirror's config stands in for it.
        read = subprocess.run(
            ["git", "config", "--file", str(config), "--get", "remote.origin.url"],
            env=git_env(),
            capture_output=True,
            text=True,
            timeout=READ_TIMEOUT,
            check=False,
        )
        source = read.stdout.strip()
        if read.returncode != 0 or not source:
            raise CodeHostError(
                f"the mirror of {repo} at {config.parent} names no source; "
                "run `offload repos sync` to repair it"
            )
        if not is_local_path(source):
            raise NotHosted(
                f"repository {repo} is mirrored from {redact_source(source)}; "
                "its branches and pull requests live on that host"
            )
        return source


__all__ = ["KIND", "BuiltinHost", "pull_request_url", "to_pull_request"]
