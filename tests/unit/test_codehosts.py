"""The code host registry, and the replay of recorded exchanges the host tests rely on."""

from __future__ import annotations

import httpx
import pytest
from recorded import GITHUB, RecordedTransport

from offload.repos.codehosts.base import CodeHost
from offload.repos.codehosts.bitbucketserver import BitbucketServerHost
from offload.repos.codehosts.gitea import GiteaHost
from offload.repos.codehosts.github import GitHubHost
from offload.repos.codehosts.gitlab import GitLabHost
from offload.repos.codehosts.registry import CODE_HOSTS, CodeHostConfig, connect

RECORDING = GITHUB.folder / "open_recorded.json"


@pytest.mark.parametrize(
    ("kind", "url", "cls"),
    [
        ("github", "https://api.github.com", GitHubHost),
        ("gitlab", "https://gitlab.com", GitLabHost),
        ("gitea", "https://gitea.example.com", GiteaHost),
        ("bitbucketserver", "https://bitbucket.example.com", BitbucketServerHost),
    ],
)
async def test_connect_builds_the_host_of_each_kind(kind: str, url: str, cls: type) -> None:
    async with httpx.AsyncClient() as http:
        host: CodeHost = connect(CodeHostConfig(kind, url, "s3cret"), http)
        assert isinstance(host, cls)
        assert host.kind == kind
    assert sorted(CODE_HOSTS) == ["bitbucketserver", "gitea", "github", "gitlab"]


def test_an_unknown_kind_lists_the_valid_ones() -> None:
    valid = "bitbucketserver, gitea, github, gitlab"
    with pytest.raises(ValueError, match=f"'bitbucket'; valid kinds are: {valid}"):
        connect(CodeHostConfig("bitbucket", "https://bitbucket.org", "s3cret"))


def test_a_config_without_a_token_is_refused_before_any_call() -> None:
    with pytest.raises(ValueError, match="has no token"):
        connect(CodeHostConfig("gitea", "https://gitea.example.com", ""))


def test_a_config_never_shows_its_token() -> None:
    config = CodeHostConfig("github", "https://api.github.com", "ghp_s3cret")
    assert "ghp_s3cret" not in repr(config)


async def test_a_request_that_differs_from_the_recording_fails_the_test() -> None:
    transport = RecordedTransport(RECORDING)
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(pytest.fail.Exception) as failure:
            await http.post(
                "https://api.github.com/repos/octo-org/hello-world/pulls", json={"title": "other"}
            )
    message = str(failure.value)
    assert "open_recorded.json: request 1 differs from the recording" in message
    assert "sent:     POST /repos/octo-org/hello-world/pulls json={'title': 'other'}" in message


async def test_unused_exchanges_and_a_missing_header_fail_the_test() -> None:
    transport = RecordedTransport(RECORDING, headers={"Authorization": "Bearer t"})
    with pytest.raises(pytest.fail.Exception, match="4 recorded exchange"):
        transport.assert_all_used()
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(pytest.fail.Exception, match="missing for the Authorization header"):
            await http.post(
                "https://api.github.com/repos/octo-org/hello-world/pulls",
                json=transport.exchanges[0]["request"]["json"],
            )
