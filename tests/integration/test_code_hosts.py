"""Which code host takes a repository's pull requests: built-in, or a configured connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from offload.config import CodeHostConnection
from offload.db.base import Database
from offload.repos.codehosts.base import CodeHostError
from offload.repos.codehosts.hosts import CodeHosts, source_location
from offload.repos.mirror import Mirrors
from offload.repos.registry import RepoRegistry
from offload.secrets.cipher import Cipher, new_key
from offload.secrets.store import GLOBAL, Secrets

GITHUB = CodeHostConnection(kind="github", url="https://api.github.com", token_secret="GH_TOKEN")
GITLAB = CodeHostConnection(
    kind="gitlab", url="https://gitlab.example.com", token_secret="GL_TOKEN"
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("https://github.com/acme/api.git", ("github.com", "acme/api")),
        ("git@github.com:acme/api.git", ("github.com", "acme/api")),
        ("ssh://git@GitLab.example.com/group/sub/proj", ("gitlab.example.com", "group/sub/proj")),
    ],
)
def test_a_sources_host_and_path(source: str, expected: tuple[str, str]) -> None:
    assert source_location(source) == expected


async def test_each_repository_gets_its_hosts_client_under_its_path_there(
    db: Database, tmp_path: Path
) -> None:
    registry = RepoRegistry(db)
    local = tmp_path / "hosted"
    local.mkdir()
    await registry.add(str(local), name="hosted")
    await registry.add("https://github.com/acme/api.git", name="api")
    await registry.add("https://gitlab.example.com/group/proj.git", name="proj")
    await registry.add("https://bitbucket.example.com/x/y.git", name="elsewhere")
    secrets = Secrets(db, Cipher(new_key()))
    await secrets.set(GLOBAL, "GH_TOKEN", "ghp-secret")
    # Code host tokens are the site's: a user's secret of the same name is not one.
    await secrets.set("olive", "GL_TOKEN", "olive-token")
    hosts = CodeHosts(
        db,
        registry,
        Mirrors(tmp_path / "mirrors"),
        secrets=secrets,
        connections=[GITHUB, GITLAB],
    )

    assert (await hosts.for_repo("hosted")).kind == "builtin"
    github = await hosts.for_repo("api")
    assert github.kind == "github"
    # offload calls it "api"; GitHub knows it as acme/api.
    assert github.push_url("api") == "https://x-access-token:ghp-secret@github.com/acme/api.git"
    with pytest.raises(CodeHostError, match="secret GL_TOKEN is not set"):
        await hosts.for_repo("proj")
    await secrets.set(GLOBAL, "GL_TOKEN", "glpat-secret")
    gitlab = await hosts.for_repo("proj")
    assert gitlab.kind == "gitlab"
    assert (
        gitlab.push_url("proj") == "https://oauth2:glpat-secret@gitlab.example.com/group/proj.git"
    )
    with pytest.raises(
        CodeHostError, match=r"no code host connection covers it.*OFFLOAD_CODE_HOSTS"
    ):
        await hosts.for_repo("elsewhere")
    with pytest.raises(CodeHostError, match="not registered"):
        await hosts.for_repo("missing")
