"""Which code host serves a repository: the built-in one for repositories held from a local path."""

from __future__ import annotations

from offload.clock import Clock
from offload.db.base import Database
from offload.repos.codehosts.base import CodeHost, CodeHostError
from offload.repos.codehosts.builtin import BuiltinHost
from offload.repos.mirror import Mirrors
from offload.repos.pulls import PullRequestStore
from offload.repos.registry import RepoRegistry, is_local_path


class CodeHosts:
    """Finds the code host of each repository."""

    def __init__(
        self, db: Database, registry: RepoRegistry, mirrors: Mirrors, *, clock: Clock | None = None
    ) -> None:
        self.registry = registry
        self.builtin = BuiltinHost(PullRequestStore(db, clock), registry, mirrors)

    async def for_repo(self, name: str) -> CodeHost:
        """The host that takes `name`'s branches and pull requests; CodeHostError if none does."""
        repo = await self.registry.get(name)
        if repo is None:
            raise CodeHostError(f"repository {name!r} is not registered (`offload repos add`)")
        if is_local_path(repo.source):
            return self.builtin
        raise CodeHostError(
            f"repository {name} is mirrored from {repo.source}, and no code host connection "
            "covers it; only repositories held from a local path (the built-in host) can get "
            "pull requests on this server"
        )
