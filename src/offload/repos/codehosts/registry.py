"""The code hosts offload can open pull requests on, by kind, and how to connect to one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from offload.repos.codehosts.base import CodeHost
from offload.repos.codehosts.bitbucketserver import BitbucketServerHost
from offload.repos.codehosts.gitea import GiteaHost
from offload.repos.codehosts.github import GitHubHost
from offload.repos.codehosts.gitlab import GitLabHost

CODE_HOSTS: dict[str, Callable[[str, str, httpx.AsyncClient | None], CodeHost]] = {
    "github": GitHubHost,
    "gitlab": GitLabHost,
    "gitea": GiteaHost,
    "bitbucketserver": BitbucketServerHost,
}


@dataclass(frozen=True)
class CodeHostConfig:
    """Which host to talk to: its kind, its URL (API root or web root) and a token."""

    kind: str
    url: str
    # Kept out of repr() so a logged config never shows the credential.
    token: str = field(repr=False)


def connect(config: CodeHostConfig, http: httpx.AsyncClient | None = None) -> CodeHost:
    """The host `config` names; ValueError listing the valid kinds for an unknown one."""
    try:
        host = CODE_HOSTS[config.kind]
    except KeyError:
        raise ValueError(
            f"unknown code host kind {config.kind!r}; valid kinds are: "
            f"{', '.join(sorted(CODE_HOSTS))}"
        ) from None
    if not config.url:
        raise ValueError(
            f"the {config.kind} code host has no URL: give its API or web root, "
            "e.g. https://api.github.com, https://gitlab.com, https://gitea.example.com or "
            "https://bitbucket.example.com"
        )
    if not config.token:
        raise ValueError(
            f"the {config.kind} code host at {config.url} has no token: give one that may "
            "open and update pull requests"
        )
    return host(config.url, config.token, http)
