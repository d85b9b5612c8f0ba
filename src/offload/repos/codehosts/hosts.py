"""Which code host serves a repository.

A repository held from a local path is the built-in host's. One mirrored from a URL belongs to
the connection of OFFLOAD_CODE_HOSTS whose host name its URL has; the host sees it under its
path there (github.com/acme/api.git is `acme/api`), whatever offload names it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from offload.clock import Clock
from offload.config import CodeHostConnection
from offload.db.base import Database
from offload.repos.codehosts.base import (
    CodeHost,
    CodeHostError,
    PullRequest,
    PullRequestChanges,
    PullRequestDraft,
)
from offload.repos.codehosts.builtin import BuiltinHost
from offload.repos.codehosts.registry import CodeHostConfig, connect
from offload.repos.mirror import Mirrors
from offload.repos.pulls import PullRequestStore
from offload.repos.registry import RepoRegistry, is_local_path
from offload.secrets.cipher import CipherError
from offload.secrets.store import Secrets, UnknownSecret

_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>.*)$")


def source_location(source: str) -> tuple[str, str]:
    """The host name and repository path of a git URL (https://h/a/b.git or git@h:a/b.git)."""
    if "://" in source:
        parts = urlsplit(source)
        host, path = parts.hostname or "", parts.path
    else:
        match = _SCP_LIKE.match(source)
        host, path = (match["host"], match["path"]) if match else ("", source)
    return host.lower(), path.strip("/").removesuffix(".git")


def serves(connection: CodeHostConnection, host: str) -> bool:
    """Whether `connection` is the code host of repositories on `host`."""
    if connection.repo_host:
        return connection.repo_host.lower() == host
    own = (urlsplit(connection.url).hostname or "").lower()
    return host in (own, own.removeprefix("api."))


class ScopedHost:
    """A code host seen through one repository: offload's name in, the host's path out."""

    def __init__(self, host: CodeHost, path: str) -> None:
        self.host = host
        self.path = path
        self.kind = host.kind

    async def open(self, draft: PullRequestDraft) -> PullRequest:
        """Open on the host's path of the repository."""
        return await self.host.open(
            PullRequestDraft(
                repo=self.path,
                base_ref=draft.base_ref,
                head_ref=draft.head_ref,
                title=draft.title,
                body=draft.body,
                draft=draft.draft,
                author=draft.author,
            )
        )

    async def update(self, repo: str, external_id: str, changes: PullRequestChanges) -> PullRequest:
        """Update on the host's path of the repository."""
        return await self.host.update(self.path, external_id, changes)

    async def close(self, repo: str, external_id: str) -> PullRequest:
        """Close on the host's path of the repository."""
        return await self.host.close(self.path, external_id)

    async def get(self, repo: str, external_id: str) -> PullRequest:
        """Read from the host's path of the repository."""
        return await self.host.get(self.path, external_id)

    def push_url(self, repo: str) -> str:
        """The host's push URL of the repository."""
        return self.host.push_url(self.path)


class CodeHosts:
    """Finds the code host of each repository."""

    def __init__(
        self,
        db: Database,
        registry: RepoRegistry,
        mirrors: Mirrors,
        *,
        secrets: Secrets,
        connections: Sequence[CodeHostConnection] = (),
        clock: Clock | None = None,
    ) -> None:
        self.registry = registry
        # Code host tokens are the site's: global secrets, whoever's batch change pushes.
        self.secrets = secrets
        self.connections = list(connections)
        self.builtin = BuiltinHost(PullRequestStore(db, clock), registry, mirrors)

    async def for_repo(self, name: str) -> CodeHost:
        """The host that takes `name`'s branches and pull requests; CodeHostError if none does."""
        repo = await self.registry.get(name)
        if repo is None:
            raise CodeHostError(f"repository {name!r} is not registered (`offload repos add`)")
        if is_local_path(repo.source):
            return self.builtin
        host, path = source_location(repo.source)
        for connection in self.connections:
            if not serves(connection, host):
                continue
            try:
                token = await self.secrets.global_value(connection.token_secret)
            except (UnknownSecret, CipherError) as exc:
                raise CodeHostError(f"the {connection.kind} code host's token: {exc}") from exc
            config = CodeHostConfig(connection.kind, connection.url, token)
            try:
                return ScopedHost(connect(config), path)
            except ValueError as exc:
                raise CodeHostError(str(exc)) from exc
        raise CodeHostError(
            f"repository {name} is mirrored from {host or repo.source}, and no code host "
            "connection covers it: add one to OFFLOAD_CODE_HOSTS, e.g. "
            '[{"kind": "github", "url": "https://api.github.com", "token_secret": "GH_TOKEN"}]'
        )
